// The MPI seam: thin wrappers over the C API that turn error codes into exceptions.
#include "mpi/mpi.hpp"

#include <fmt/format.h>
#include <mpi.h>

#include <algorithm>
#include <cstdlib>
#include <stdexcept>
#include <utility>

namespace shmpool::cluster::mpi {
namespace {

void check(int rc, const char* call) {
    if (rc == MPI_SUCCESS) return;
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    MPI_Error_string(rc, text, &length);
    throw std::runtime_error(fmt::format("{} failed: {}", call, std::string_view(text, length)));
}

int env_int(const char* name) {
    const char* v = std::getenv(name);  // NOLINT(concurrency-mt-unsafe): read before any thread
    return v ? std::atoi(v) : -1;
}

}  // namespace

std::optional<Launch> launched_by_mpirun() noexcept {
    // Open MPI's names first, then PMIx's (other launchers).
    int rank = env_int("OMPI_COMM_WORLD_RANK");
    int size = env_int("OMPI_COMM_WORLD_SIZE");
    if (rank < 0 || size < 0) {
        rank = env_int("PMIX_RANK");
        size = env_int("PMIX_SIZE");
    }
    if (rank < 0 || size < 1) return std::nullopt;
    return Launch{rank, size};
}

void initialize(int* argc, char*** argv) {
    int provided = 0;
    check(MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided), "MPI_Init_thread");
    if (provided < MPI_THREAD_FUNNELED)
        throw std::runtime_error("this MPI cannot serve a process with threads (FUNNELED)");
    check(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN), "MPI_Comm_set_errhandler");
}

void finalize() noexcept {
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Finalize();
}

int rank() {
    int r = 0;
    check(MPI_Comm_rank(MPI_COMM_WORLD, &r), "MPI_Comm_rank");
    return r;
}

int size() {
    int s = 0;
    check(MPI_Comm_size(MPI_COMM_WORLD, &s), "MPI_Comm_size");
    return s;
}

Send::Send(int destination, int tag, std::string bytes)
    : bytes_(std::make_unique<std::string>(std::move(bytes))) {
    if (bytes_->size() > max_message)
        throw std::length_error(fmt::format("a cluster message of {} bytes", bytes_->size()));
    auto request = std::make_unique<MPI_Request>(MPI_REQUEST_NULL);
    check(MPI_Isend(bytes_->data(), static_cast<int>(bytes_->size()), MPI_BYTE, destination, tag,
                    MPI_COMM_WORLD, request.get()),
          "MPI_Isend");
    request_ = request.release();
}

Send::Send(Send&& other) noexcept
    : bytes_(std::move(other.bytes_)), request_(std::exchange(other.request_, nullptr)) {
}

Send& Send::operator=(Send&& other) noexcept {
    std::swap(bytes_, other.bytes_);
    std::swap(request_, other.request_);
    return *this;
}

Send::~Send() {
    // The transport drops completed sends only, and waits for the rest before MPI_Finalize.
    delete static_cast<MPI_Request*>(request_);
}

bool Send::complete() {
    int done = 0;
    check(MPI_Test(static_cast<MPI_Request*>(request_), &done, MPI_STATUS_IGNORE), "MPI_Test");
    return done != 0;
}

std::optional<Message> try_receive() {
    int found = 0;
    MPI_Message handle = MPI_MESSAGE_NULL;
    MPI_Status status{};
    check(MPI_Improbe(MPI_ANY_SOURCE, MPI_ANY_TAG, MPI_COMM_WORLD, &found, &handle, &status),
          "MPI_Improbe");
    if (!found) return std::nullopt;
    int count = 0;
    check(MPI_Get_count(&status, MPI_BYTE, &count), "MPI_Get_count");
    Message m;
    m.source = status.MPI_SOURCE;
    m.tag = status.MPI_TAG;
    m.bytes.resize(static_cast<std::size_t>(count));
    check(MPI_Mrecv(m.bytes.data(), count, MPI_BYTE, &handle, MPI_STATUS_IGNORE), "MPI_Mrecv");
    return m;
}

void broadcast(void* data, std::size_t length, int root) {
    constexpr std::size_t piece = std::size_t{1} << 30;
    auto* p = static_cast<char*>(data);
    for (std::size_t at = 0; at < length; at += piece) {
        const auto n = static_cast<int>(std::min(piece, length - at));
        check(MPI_Bcast(p + at, n, MPI_BYTE, root, MPI_COMM_WORLD), "MPI_Bcast");
    }
}

void abort_job(int code) noexcept {
    MPI_Abort(MPI_COMM_WORLD, code);
    std::_Exit(code);  // MPI_Abort does not return; this is for the compiler
}

}  // namespace shmpool::cluster::mpi
