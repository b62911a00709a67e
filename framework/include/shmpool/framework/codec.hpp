// How task arguments and results travel between processes: a small binary codec.
//
// Supported out of the box: trivially copyable types, std::string, std::vector of trivially
// copyable types (or of std::string), std::optional, std::pair and std::tuple of these. Other
// types plug in by specialising shmpool::Codec<T> with `static void encode(Writer&, const T&)` and
// `static T decode(Reader&)`. Large data should not travel this way: put it in a SharedArray or a
// SharedMemory block and pass the name.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <optional>
#include <stdexcept>
#include <string>
#include <tuple>
#include <type_traits>
#include <utility>
#include <vector>

namespace shmpool {

/// Appends encoded bytes to a buffer.
class Writer {
  public:
    explicit Writer(std::string& out) : out_(out) {}
    void bytes(const void* data, std::size_t n) { out_.append(static_cast<const char*>(data), n); }
    template <class T>
    void raw(const T& value) {
        bytes(&value, sizeof value);
    }

  private:
    std::string& out_;
};

/// Reads encoded bytes; throws std::length_error if the data runs out (a malformed message).
class Reader {
  public:
    Reader(const char* data, std::size_t size) : p_(data), end_(data + size) {}
    void bytes(void* out, std::size_t n) {
        if (static_cast<std::size_t>(end_ - p_) < n) throw std::length_error("truncated task data");
        if (n == 0) return;  // out may be null then (an empty vector's data())
        std::memcpy(out, p_, n);
        p_ += n;
    }
    template <class T>
    T raw() {
        T value;
        bytes(&value, sizeof value);
        return value;
    }
    std::size_t left() const noexcept { return static_cast<std::size_t>(end_ - p_); }
    /// The next `n` bytes, in place; throws std::length_error if there are fewer.
    const char* view(std::size_t n) {
        if (left() < n) throw std::length_error("truncated task data");
        const char* at = p_;
        p_ += n;
        return at;
    }

  private:
    const char* p_;
    const char* end_;
};

template <class T, class Enable = void>
struct Codec;

namespace detail {
template <class T>
struct IsStdOptional : std::false_type {};
template <class T>
struct IsStdOptional<std::optional<T>> : std::true_type {};
}  // namespace detail

template <class T>
struct Codec<T, std::enable_if_t<std::is_trivially_copyable_v<T> && !std::is_pointer_v<T> &&
                                 !detail::IsStdOptional<T>::value>> {
    static constexpr bool raw_bytes = true;  // encoded as its object representation, nothing else
    static void encode(Writer& w, const T& v) { w.raw(v); }
    static T decode(Reader& r) { return r.raw<T>(); }
};

template <>
struct Codec<std::string> {
    static void encode(Writer& w, const std::string& s) {
        w.raw<std::uint64_t>(s.size());
        w.bytes(s.data(), s.size());
    }
    static std::string decode(Reader& r) {
        auto n = r.raw<std::uint64_t>();
        if (n > r.left()) throw std::length_error("truncated task data");
        const char* bytes = r.view(n);
        return std::string(bytes, n);  // one pass: no zero-fill before the copy
    }
};

template <class T>
struct Codec<std::vector<T>> {
    static void encode(Writer& w, const std::vector<T>& v) {
        w.raw<std::uint64_t>(v.size());
        if constexpr (std::is_trivially_copyable_v<T>) {
            w.bytes(v.data(), v.size() * sizeof(T));
        } else {
            for (const auto& x : v)
                Codec<T>::encode(w, x);
        }
    }
    static std::vector<T> decode(Reader& r) {
        auto n = r.raw<std::uint64_t>();
        std::vector<T> v;
        if constexpr (std::is_trivially_copyable_v<T>) {
            if (n > r.left() / (sizeof(T) ? sizeof(T) : 1))
                throw std::length_error("truncated task data");
            v.resize(n);
            r.bytes(v.data(), n * sizeof(T));
        } else {
            for (std::uint64_t i = 0; i < n; ++i)
                v.push_back(Codec<T>::decode(r));
        }
        return v;
    }
};

template <class T>
struct Codec<std::optional<T>> {
    static void encode(Writer& w, const std::optional<T>& v) {
        w.raw<std::uint8_t>(v ? 1 : 0);
        if (v) Codec<T>::encode(w, *v);
    }
    static std::optional<T> decode(Reader& r) {
        if (r.raw<std::uint8_t>() == 0) return std::nullopt;
        return Codec<T>::decode(r);
    }
};

template <class... Ts>
struct Codec<std::tuple<Ts...>,
             std::enable_if_t<!std::is_trivially_copyable_v<std::tuple<Ts...>>>> {
    static void encode(Writer& w, const std::tuple<Ts...>& t) {
        std::apply([&](const auto&... x) { (Codec<std::decay_t<decltype(x)>>::encode(w, x), ...); },
                   t);
    }
    static std::tuple<Ts...> decode(Reader& r) {
        return std::tuple<Ts...>{Codec<Ts>::decode(r)...};
    }
};

template <class A, class B>
struct Codec<std::pair<A, B>, std::enable_if_t<!std::is_trivially_copyable_v<std::pair<A, B>>>> {
    static void encode(Writer& w, const std::pair<A, B>& p) {
        Codec<A>::encode(w, p.first);
        Codec<B>::encode(w, p.second);
    }
    static std::pair<A, B> decode(Reader& r) {
        A a = Codec<A>::decode(r);
        B b = Codec<B>::decode(r);
        return {std::move(a), std::move(b)};
    }
};

template <class T>
void encode(std::string& out, const T& value) {
    Writer w(out);
    Codec<T>::encode(w, value);
}

}  // namespace shmpool
