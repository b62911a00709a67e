// Signature: a task's argument and result types as its worker program describes them, which
// encodes a job's items from Python objects and decodes its results into them; Items, a job's
// encoded items on their way to the pool.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "job.hpp"
#include "shmpool/framework/detail/job_items.hpp"
#include "wire_type.hpp"

namespace shmpool::python {

/// Items encoded for one job, submitted once.
struct Items {
    detail::JobItems items;
    bool submitted = false;
};

// A task's wire types, as its worker program described them.

/// Thread-compatible: const, used with the GIL held.
class Signature {
  public:
    Signature(std::string task, const std::vector<std::string>& args, const std::string& result,
              std::optional<std::pair<std::uint32_t, std::uint32_t>> packed);
    const std::string& task() const noexcept { return task_; }
    std::size_t arity() const noexcept { return args_.size(); }
    bool packed() const noexcept { return packed_.has_value(); }
    std::size_t result_stride() const noexcept { return packed_ ? packed_->second : 0; }
    bool returns_value() const noexcept { return result_.kind != WireType::Kind::none; }
    std::vector<std::string> arg_types() const;
    const std::string& result_type() const noexcept { return result_.text; }

    /// One job's items: each item of `calls` is the argument (star: the tuple of arguments) of
    /// one call. Nothing is encoded unless every item is; the error names the item.
    std::unique_ptr<Items> encode_calls(const pybind11::iterable& calls, bool star,
                                        std::size_t first_index) const;

    /// for_each_index: calls (leading..., begin, end) over [0, n) in ranges of `grain`.
    std::unique_ptr<Items> encode_ranges(const pybind11::tuple& leading, std::size_t n,
                                         std::size_t grain) const;

    /// Item `index` of `job`: its result, or its error raised (named `first_index + index`).
    pybind11::object result(const Job& job, std::size_t index, std::size_t first_index) const;
    /// Every result of `job` in order, or the error of its lowest failed item.
    pybind11::list results(const Job& job, std::size_t first_index) const;

    /// Copies the results of a packed `job` into `out` (a writable buffer of exactly their
    /// bytes, e.g. a numpy array of the result's type), or raises its lowest failed item's error.
    void results_into(const Job& job, const pybind11::buffer& out) const;

  private:
    std::string describe() const;
    [[noreturn]] void argument_error(const WireError& e, std::size_t argument,
                                     std::optional<std::size_t> item) const;
    void encode_argument(pybind11::handle value, std::size_t argument,
                         std::optional<std::size_t> item, std::string& out) const;
    void encode_call(pybind11::handle call, std::size_t item, std::string& out) const;
    // A 1-D contiguous buffer (a numpy array) whose elements are the argument type: one copy.
    bool packed_from_buffer(const pybind11::iterable& calls, detail::JobItems& items) const;
    // The common inputs of a task of one number, without the general encoder's calls per item:
    // a range (no Python object per item at all), a list or a tuple.
    bool packed_scalars(const pybind11::iterable& calls, std::size_t first_index,
                        detail::JobItems& items) const;
    static bool fits(const WireType& type, long long v);
    static bool format_matches(std::string_view format, const WireType& type);
    // The results of a packed job of numbers, read straight from its buffer.
    std::optional<pybind11::list> packed_numbers(const Job& job) const;
    pybind11::object decode_result(const Job& job, std::size_t index) const;

    std::string task_;
    std::vector<WireType> args_;
    WireType result_;
    std::optional<std::pair<std::uint32_t, std::uint32_t>> packed_;
};

}  // namespace shmpool::python
