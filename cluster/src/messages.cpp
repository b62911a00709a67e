// The messages' bytes: each field through shmpool's Codec, in declaration order.
#include "messages.hpp"

#include <chrono>
#include <optional>

#include "shmpool/framework/codec.hpp"

namespace shmpool::cluster {
namespace {

// One put/get pair per field type; the structs below list their fields once, in order.
void put(Writer& w, const std::string& s) {
    Codec<std::string>::encode(w, s);
}
template <class T>
requires std::is_arithmetic_v<T> || std::is_enum_v<T>
void put(Writer& w, T v) {
    w.raw(v);
}
void get(Reader& r, std::string& s) {
    s = Codec<std::string>::decode(r);
}
template <class T>
requires std::is_arithmetic_v<T> || std::is_enum_v<T>
void get(Reader& r, T& v) {
    v = r.raw<T>();
}
template <class T>
void put(Writer& w, const std::vector<T>& v);
template <class T>
void get(Reader& r, std::vector<T>& v);

template <class F>
void fields(PoolStats& s, F&& f) {
    f(s.tasks_done, s.tasks_failed, s.retries, s.crashes, s.respawns, s.start_failures, s.timeouts,
      s.cancelled, s.recycled_tasks, s.recycled_memory, s.reclaimed, s.stolen_ranges,
      s.busy_seconds);
}
template <class F>
void fields(RemoteError& e, F&& f) {
    f(e.kind, e.task, e.type, e.message, e.pid, e.signal, e.exit_code, e.attempts, e.seconds);
}
template <class F>
void fields(BlockSpec& b, F&& f) {
    f(b.name, b.size, b.replicate);
}
template <class F>
void fields(SpecialError& s, F&& f) {
    f(s.position, s.error);
}
template <class F>
void fields(WriteBack& b, F&& f) {
    f(b.block, b.offset, b.bytes);
}
template <class F>
void fields(WritableBlock& b, F&& f) {
    f(b.name, b.element_bytes);
}

template <class Rep, class Period>
void put(Writer& w, std::chrono::duration<Rep, Period> d) {
    w.raw<std::int64_t>(d.count());
}
template <class Rep, class Period>
void get(Reader& r, std::chrono::duration<Rep, Period>& d) {
    d = std::chrono::duration<Rep, Period>(r.raw<std::int64_t>());
}
template <class T>
void put(Writer& w, const std::optional<T>& v) {
    put(w, v.has_value());
    put(w, v.value_or(T{}));
}
template <class T>
void get(Reader& r, std::optional<T>& v) {
    bool has = false;
    T x{};
    get(r, has);
    get(r, x);
    v = has ? std::optional<T>(x) : std::nullopt;
}

// What travels of PoolOptions: all but the callbacks, the progress bar and the cluster mode
// itself (a node's pool is never a cluster pool).
template <class F>
void fields(PoolOptions& o, F&& f) {
    f(o.workers, o.max_retries, o.task_timeout, o.max_start_failures, o.kill_grace, o.slot_bytes,
      o.worker_executable, o.shared_blocks, o.environment, o.initializer.name, o.threads_per_worker,
      o.idle_spin, o.measure_busy, o.max_tasks_per_worker, o.max_memory_per_worker,
      o.cluster.writable_blocks);
}
template <class F>
void fields(ExitStatus& s, F&& f) {
    f(s.signal, s.exit_code, s.core_dumped, s.peak_rss_kb);
}
// The node is not sent: rank 0 knows which node a message came from.
template <class F>
void fields(WorkerEvent& e, F&& f) {
    f(e.worker, e.pid, e.status, e.reason, e.task, e.item);
}

// The messages.
template <class F>
void fields(Hello& m, F&& f) {
    f(m.protocol, m.tasks, m.shm_identity, m.host);
}
template <class F>
void fields(OpenPool& m, F&& f) {
    f(m.pool, m.shm_identity, m.options, m.blocks);
}
template <class F>
void fields(PoolReady& m, F&& f) {
    f(m.pool, m.workers);
}
template <class F>
void fields(PoolFailed& m, F&& f) {
    f(m.pool, m.error);
}
template <class F>
void fields(ChunkRequest& m, F&& f) {
    f(m.pool, m.chunk, m.task, m.in_stride, m.out_stride, m.count, m.first_item, m.index_ranges,
      m.items);
}
template <class F>
void fields(ChunkResult& m, F&& f) {
    f(m.pool, m.chunk, m.count, m.response, m.specials, m.writes, m.stats);
}
template <class F>
void fields(ChunkRef& m, F&& f) {
    f(m.pool, m.chunk);
}
template <class F>
void fields(RemoteEvent& m, F&& f) {
    f(m.pool, m.event);
}
template <class F>
void fields(ClosedPool& m, F&& f) {
    f(m.pool, m.stats);
}

// Structs with fields() travel field by field.
template <class T>
requires requires(T& t) {
    fields(t, [](auto&...) {});
}
void put(Writer& w, const T& t) {
    fields(const_cast<T&>(t), [&](auto&... x) { (put(w, x), ...); });
}
template <class T>
requires requires(T& t) {
    fields(t, [](auto&...) {});
}
void get(Reader& r, T& t) {
    fields(t, [&](auto&... x) { (get(r, x), ...); });
}

template <class T>
void put(Writer& w, const std::vector<T>& v) {
    w.raw<std::uint64_t>(v.size());
    for (const T& x : v)
        put(w, x);
}
template <class T>
void get(Reader& r, std::vector<T>& v) {
    const auto n = r.raw<std::uint64_t>();
    if (n > r.left()) throw std::length_error("truncated cluster message");
    v.resize(n);
    for (T& x : v)
        get(r, x);
}

}  // namespace

template <class M>
std::string encode(const M& m) {
    std::string out;
    Writer w(out);
    put(w, m);
    return out;
}
template <class M>
M decode(std::string_view bytes) {
    Reader r(bytes.data(), bytes.size());
    M m;
    get(r, m);
    return m;
}

#define SHMPOOL_CLUSTER_MESSAGE(M)              \
    template std::string encode<M>(const M& m); \
    template M decode<M>(std::string_view bytes);
SHMPOOL_CLUSTER_MESSAGE(Hello)
SHMPOOL_CLUSTER_MESSAGE(OpenPool)
SHMPOOL_CLUSTER_MESSAGE(PoolReady)
SHMPOOL_CLUSTER_MESSAGE(PoolFailed)
SHMPOOL_CLUSTER_MESSAGE(ChunkRequest)
SHMPOOL_CLUSTER_MESSAGE(ChunkResult)
SHMPOOL_CLUSTER_MESSAGE(ChunkRef)
SHMPOOL_CLUSTER_MESSAGE(RemoteEvent)
SHMPOOL_CLUSTER_MESSAGE(ClosedPool)
#undef SHMPOOL_CLUSTER_MESSAGE

std::string encode_pool(std::uint32_t pool) {
    std::string out;
    Writer w(out);
    put(w, pool);
    return out;
}
std::uint32_t decode_pool(std::string_view bytes) {
    Reader r(bytes.data(), bytes.size());
    return r.raw<std::uint32_t>();
}

}  // namespace shmpool::cluster
