// The wire types of C++ task arguments and results (framework/detail/type_descriptor.hpp): parsed
// from the text a worker program prints, and the codec's bytes made from and read into Python
// objects.
#pragma once

#include <pybind11/pybind11.h>

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "shmpool/framework/codec.hpp"

namespace shmpool::python {

struct WireType {
    enum class Kind {
        boolean,
        character,
        signed_int,
        unsigned_int,
        real,
        array,
        raw,
        str,
        vec,
        opt,
        tuple,
        opaque,
        none
    };
    Kind kind = Kind::opaque;
    std::size_t size = 0;         ///< bytes of a fixed-size type (0: variable)
    std::size_t count = 0;        ///< elements of an array
    std::vector<WireType> items;  ///< element type (array, vec, opt), or members (tuple)
    std::string text;             ///< as the worker program wrote it

    /// Sent as its bytes alone, of `size` bytes.
    bool fixed() const noexcept { return size != 0; }
};

/// Parses a descriptor; std::invalid_argument if it is not one. A type that holds `opaque` is
/// opaque as a whole (its parts cannot be told apart).
WireType parse_wire_type(std::string_view text);

/// The fewest bytes a value of `type` takes on the wire.
std::size_t min_wire_size(const WireType& type);

/// A Python value that does not fit a wire type: raised as `python_type` (TypeError,
/// OverflowError or ValueError) by the caller, who adds the task, item and argument.
class WireError : public std::runtime_error {
  public:
    WireError(PyObject* python_type, const std::string& message)
        : std::runtime_error(message), python_type_(python_type) {}
    PyObject* python_type() const noexcept { return python_type_; }

  private:
    PyObject* python_type_;
};

/// Appends `value` encoded as `type` to `out`; WireError if it does not fit (a Python error
/// raised meanwhile, e.g. by __index__, is cleared into it).
void encode(const WireType& type, pybind11::handle value, std::string& out);

/// Reads one value of `type`; std::length_error if the bytes run out.
pybind11::object decode(const WireType& type, Reader& in);

}  // namespace shmpool::python
