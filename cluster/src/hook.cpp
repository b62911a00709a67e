// The cluster library's hook into the framework: installed at static initialisation (the library
// is linked whole), consulted by shmpool::init and by every Pool.
#include <fmt/format.h>

#include <cstdio>
#include <cstdlib>
#include <memory>

#include "coordinator.hpp"
#include "node_supervisor.hpp"
#include "parent/cluster_hook.hpp"
#include "pipeline/arena.hpp"
#include "remote_pool.hpp"
#include "remote_steps.hpp"
#include "shmpool/cluster/cluster.hpp"

namespace shmpool::cluster {
namespace {

class Hook final : public detail::ClusterHook {
  public:
    void init(int argc, char** argv) noexcept override {
        const std::optional<mpi::Launch> launch = mpi::launched_by_mpirun();
        if (!launch || launch->size < 2 || coordinator_) return;  // one machine, as always
        // Every rank registers the same tasks before comparing them.
        detail::register_pipeline_step();
        if (launch->rank != 0) run_node(*launch, argc, argv);
        try {
            coordinator_ = std::make_unique<Coordinator>(*launch);
            node_count_ = static_cast<unsigned>(launch->size);
            std::atexit([] { the_hook().end(); });
        } catch (const std::exception& e) {
            fmt::print(stderr, "shmpool: cannot join the MPI job: {}\n", e.what());
            std::fflush(stderr);
            std::_Exit(1);
        }
    }
    bool active() const noexcept override { return coordinator_ != nullptr; }
    std::unique_ptr<detail::RemoteNodes> attach(const detail::PoolWiring& wiring) override {
        return std::make_unique<RemotePool>(*coordinator_, wiring);
    }
    std::vector<std::string> private_environment() const override {
        // Under mpirun (even a job of one): Open MPI's and PMIx's variables, so that a worker
        // that links MPI does not join the job. Outside it, the environment as it is.
        if (!mpi::launched_by_mpirun()) return {};
        return {"OMPI_", "PMIX_", "OPAL_", "ORTE_", "PRTE_"};
    }
    unsigned nodes() const noexcept { return coordinator_ ? node_count_ : 1; }
    void end() noexcept { coordinator_.reset(); }
    static Hook& the_hook() {
        static Hook hook;
        return hook;
    }

  private:
    std::unique_ptr<Coordinator> coordinator_;
    unsigned node_count_ = 1;
};

// Registration at static initialisation, like SHMPOOL_TASK: an allocation failure this early
// ends the program, as it would for any task registered there.
const bool installed = [] {  // NOLINT(cert-err58-cpp)
    register_remote_step();  // in every process of the program, workers included
    detail::install_cluster_hook(&Hook::the_hook());
    return true;
}();

}  // namespace

bool active() noexcept {
    return Hook::the_hook().active();
}

unsigned node_count() noexcept {
    return Hook::the_hook().nodes();
}

unsigned this_node() noexcept {
    // Set by a node's supervisor for its workers.
    const char* node = std::getenv("SHMPOOL_NODE");  // NOLINT(concurrency-mt-unsafe): read-only
    return node ? static_cast<unsigned>(std::atoi(node)) : 0;
}

}  // namespace shmpool::cluster
