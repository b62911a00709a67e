// PipelineRun: one run of a pipeline. It owns the token arena, the stage pools and the queues
// between stages, and moves tokens through them on the calling thread until the source is done
// and every token came back (or the run is cancelled). Its destructor stops every worker,
// removes every block and restores the SIGINT handler, whatever happened.
#pragma once

#include <signal.h>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "pipeline/arena.hpp"
#include "pipeline/display.hpp"
#include "pipeline/stage_queue.hpp"
#include "pipeline/step_events.hpp"
#include "shmpool/framework/pipeline.hpp"
#include "shmpool/framework/pool.hpp"
#include "shmpool/shm/shareable_list.hpp"

namespace shmpool::detail {

class PipelineRun {
  public:
    /// `cancelled` is the pipeline's flag; `board`, when the options ask for a status board,
    /// receives it (it outlives the run).
    PipelineRun(const PipelinePlan& plan, std::atomic<bool>& cancelled, StepEvents& events,
                std::optional<ShareableList>& board);
    ~PipelineRun();
    PipelineRun(const PipelineRun&) = delete;
    PipelineRun& operator=(const PipelineRun&) = delete;

    /// Runs to the end; throws what the parent's own source or sink throws.
    PipelineStats run();

  private:
    struct Token {
        std::uint64_t sequence = 0;
        unsigned current = 0;  // the buffer holding the item now
    };
    unsigned worker_stages() const { return static_cast<unsigned>(plan_.specs.size()); }
    void clean_up() noexcept;
    void start_pools(unsigned processes);
    void catch_sigint();
    void produce();
    void write_item(std::uint32_t t, unsigned buffer, const std::string& bytes);
    void dispatch();
    void complete(const StepEvent& e);
    void enqueue_for(unsigned stage, std::uint32_t t);
    void skip_from(unsigned stage, std::uint64_t sequence);
    void release(std::uint32_t t);
    void consume_in_parent();

    const PipelinePlan& plan_;
    std::atomic<bool>& cancelled_;
    StepEvents& events_;
    PipelineDisplay display_;
    std::optional<SharedMemory> arena_block_;
    ArenaView arena_;
    std::vector<Token> tokens_;
    std::vector<std::uint32_t> free_tokens_;  // a stack: the tokens used last stay warm
    std::vector<std::unique_ptr<Pool>> pools_;
    std::vector<StageQueue> queues_;    // one per worker stage, then one for the parent sink
    std::vector<std::size_t> batches_;  // per worker stage: handed to the pool, not all back
    PipelineStats stats_;
    std::uint64_t next_sequence_ = 0;
    std::uint64_t end_sequence_ = UINT64_MAX;  // a worker source's end of stream
    bool source_done_ = false;
    std::size_t live_ = 0;
    bool sigint_handler_ = false;
    struct sigaction previous_sigint_ {};
};

}  // namespace shmpool::detail
