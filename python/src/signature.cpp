// Signature: items encoded from Python objects, results decoded into them (signature.hpp).
#include "signature.hpp"

#include <algorithm>
#include <cstring>
#include <limits>
#include <stdexcept>

#include "pool_errors.hpp"

namespace py = pybind11;

namespace shmpool::python {

Signature::Signature(std::string task, const std::vector<std::string>& args,
                     const std::string& result,
                     std::optional<std::pair<std::uint32_t, std::uint32_t>> packed)
    : task_(std::move(task)), result_(parse_wire_type(result)) {
    for (const std::string& a : args)
        args_.push_back(parse_wire_type(a));
    if (packed) {
        if (args_.size() != 1 || args_[0].size != packed->first ||
            (result_.kind != WireType::Kind::none && result_.size != packed->second))
            throw std::invalid_argument("task '" + task_ +
                                        "': its packed strides do not match its types");
        packed_ = packed;
    }
}

std::vector<std::string> Signature::arg_types() const {
    std::vector<std::string> out;
    for (const WireType& a : args_)
        out.push_back(a.text);
    return out;
}

std::unique_ptr<Items> Signature::encode_calls(const py::iterable& calls, bool star,
                                               std::size_t first_index) const {
    if (!star && args_.size() != 1)
        throw py::type_error("task '" + task_ + "' takes " + std::to_string(args_.size()) +
                             " arguments: use starmap (one tuple of arguments per item)");
    auto out = std::make_unique<Items>();
    detail::JobItems& items = out->items;
    if (packed_ && !star) {
        items.in_stride = packed_->first;
        items.out_stride = packed_->second;
        if (packed_from_buffer(calls, items) || packed_scalars(calls, first_index, items))
            return out;
        std::size_t i = 0;
        for (const py::handle item : calls) {
            encode_argument(item, 0, first_index + i, items.args);
            ++i;
        }
        items.count = i;
        return out;
    }
    std::size_t i = 0;
    for (const py::handle item : calls) {
        if (star) {
            encode_call(item, first_index + i, items.args);
        } else {
            encode_argument(item, 0, first_index + i, items.args);
        }
        items.offsets.push_back(items.args.size());
        ++i;
    }
    return out;
}

std::unique_ptr<Items> Signature::encode_ranges(const py::tuple& leading, std::size_t n,
                                                std::size_t grain) const {
    if (args_.size() < 2 || leading.size() + 2 != args_.size() ||
        args_[args_.size() - 1].text != "u64" || args_[args_.size() - 2].text != "u64")
        throw py::type_error("task '" + task_ + "' (" + describe() + ") does not take " +
                             std::to_string(leading.size()) +
                             " leading arguments and a range (two size_t) last");
    std::string prefix;
    for (std::size_t k = 0; k < leading.size(); ++k)
        encode_argument(leading[k], k, std::nullopt, prefix);
    auto out = std::make_unique<Items>();
    out->items.index_ranges = true;
    grain = std::max<std::size_t>(grain, 1);
    for (std::size_t b = 0; b < n; b += grain) {
        out->items.args += prefix;
        const std::uint64_t range[2] = {b, std::min(n, b + grain)};
        out->items.args.append(reinterpret_cast<const char*>(range), sizeof range);
        out->items.offsets.push_back(out->items.args.size());
    }
    return out;
}

py::object Signature::result(const Job& job, std::size_t index, std::size_t first_index) const {
    if (std::exception_ptr e = job.error(index)) raise_error(e, first_index + index);
    return decode_result(job, index);
}

py::list Signature::results(const Job& job, std::size_t first_index) const {
    if (auto [index, e] = job.first_error(); e) raise_error(e, first_index + index);
    if (job.packed() && result_.fixed() && job.size() > 0) {
        if (auto fast = packed_numbers(job)) return *fast;
    }
    py::list out(job.size());
    for (std::size_t i = 0; i < job.size(); ++i)
        out[i] = decode_result(job, i);
    return out;
}

void Signature::results_into(const Job& job, const py::buffer& out) const {
    if (auto [index, e] = job.first_error(); e) raise_error(e, index);
    if (!job.packed() || !result_.fixed())
        throw py::type_error("task '" + task_ + "' does not return one number per item");
    const py::buffer_info view = out.request(true);
    const std::size_t bytes = job.size() * result_.size;
    if (static_cast<std::size_t>(view.size * view.itemsize) != bytes)
        throw py::value_error("the output holds " + std::to_string(view.size * view.itemsize) +
                              " bytes, not the results' " + std::to_string(bytes));
    if (bytes != 0) std::memcpy(view.ptr, job.result(0).first, bytes);
}

std::string Signature::describe() const {
    std::string out;
    for (const std::string& a : arg_types())
        out += (out.empty() ? "" : ", ") + a;
    return "(" + out + ") -> " + result_.text;
}

void Signature::argument_error(const WireError& e, std::size_t argument,
                               std::optional<std::size_t> item) const {
    std::string where = "task '" + task_ + "'";
    if (item) where += " item " + std::to_string(*item);
    where += " argument " + std::to_string(argument);
    PyErr_SetString(e.python_type(), (where + ": " + e.what()).c_str());
    throw py::error_already_set();
}

void Signature::encode_argument(py::handle value, std::size_t argument,
                                std::optional<std::size_t> item, std::string& out) const {
    try {
        encode(args_[argument], value, out);
    } catch (const WireError& e) {
        argument_error(e, argument, item);
    }
}

void Signature::encode_call(py::handle call, std::size_t item, std::string& out) const {
    if (PyUnicode_Check(call.ptr()) || !PySequence_Check(call.ptr()))
        throw py::type_error("task '" + task_ + "' item " + std::to_string(item) +
                             ": expects a tuple of " + std::to_string(args_.size()) +
                             " arguments, got " +
                             std::string(py::str(py::type::handle_of(call).attr("__name__"))));
    const py::sequence args = py::reinterpret_borrow<py::sequence>(call);
    if (args.size() != args_.size())
        throw py::type_error("task '" + task_ + "' item " + std::to_string(item) + ": expects " +
                             std::to_string(args_.size()) + " arguments, got " +
                             std::to_string(args.size()));
    for (std::size_t k = 0; k < args_.size(); ++k)
        encode_argument(args[k], k, item, out);
}

bool Signature::packed_from_buffer(const py::iterable& calls, detail::JobItems& items) const {
    if (!PyObject_CheckBuffer(calls.ptr()) || PyBytes_Check(calls.ptr()) ||
        PyByteArray_Check(calls.ptr()))
        return false;
    Py_buffer view;
    if (PyObject_GetBuffer(calls.ptr(), &view, PyBUF_FORMAT | PyBUF_C_CONTIGUOUS) != 0) {
        PyErr_Clear();
        return false;
    }
    const bool fits = view.ndim == 1 && static_cast<std::size_t>(view.itemsize) == args_[0].size &&
                      format_matches(view.format ? view.format : "B", args_[0]);
    if (fits) {
        items.args.assign(static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len));
        items.count = static_cast<std::size_t>(view.len / view.itemsize);
    }
    PyBuffer_Release(&view);
    return fits;
}

bool Signature::packed_scalars(const py::iterable& calls, std::size_t first_index,
                               detail::JobItems& items) const {
    const WireType& type = args_[0];
    const bool integer =
        type.kind == WireType::Kind::signed_int || type.kind == WireType::Kind::unsigned_int;
    if (!integer && type.kind != WireType::Kind::real) return false;
    const std::size_t stride = type.size;
    if (PyRange_Check(calls.ptr())) {
        if (!integer) return false;
        long long bounds[3];
        const char* names[3] = {"start", "stop", "step"};
        for (int k = 0; k < 3; ++k) {
            int overflow = 0;
            bounds[k] = PyLong_AsLongLongAndOverflow(calls.attr(names[k]).ptr(), &overflow);
            if (overflow != 0) return false;  // the general encoder says which item is out
        }
        const Py_ssize_t length = PyObject_Length(calls.ptr());
        if (length < 0) {  // longer than Py_ssize_t: the general path says what is wrong
            PyErr_Clear();
            return false;
        }
        const auto n = static_cast<std::size_t>(length);
        if (n == 0) return true;
        // The last value, checked for overflow: it and the first fit, so every value between
        // does (else the general path names the item that does not).
        long long span = 0;
        long long last = 0;
        if (__builtin_mul_overflow(static_cast<long long>(n - 1), bounds[2], &span) ||
            __builtin_add_overflow(bounds[0], span, &last) || !fits(type, bounds[0]) ||
            !fits(type, last))
            return false;
        items.args.resize(n * stride);
        char* out = items.args.data();
        // Unsigned steps: two's complement, no signed overflow past the last value.
        auto v = static_cast<unsigned long long>(bounds[0]);
        const auto step = static_cast<unsigned long long>(bounds[2]);
        for (std::size_t i = 0; i < n; ++i, v += step)
            std::memcpy(out + i * stride, &v, stride);  // little-endian: the low bytes
        items.count = n;
        return true;
    }
    if (!PyList_CheckExact(calls.ptr()) && !PyTuple_CheckExact(calls.ptr())) return false;
    const py::object sequence = py::reinterpret_borrow<py::object>(calls);
    const auto n = static_cast<std::size_t>(PySequence_Fast_GET_SIZE(sequence.ptr()));
    PyObject** values = PySequence_Fast_ITEMS(sequence.ptr());
    items.args.resize(n * stride);
    std::string other;
    for (std::size_t i = 0; i < n; ++i) {
        char* at = items.args.data() + i * stride;
        PyObject* value = values[i];
        if (integer && PyLong_CheckExact(value)) {
            int overflow = 0;
            const long long v = PyLong_AsLongLongAndOverflow(value, &overflow);
            if (overflow == 0 && fits(type, v)) {
                std::memcpy(at, &v, stride);
                continue;
            }
        } else if (!integer && PyFloat_CheckExact(value) && stride == sizeof(double)) {
            const double v = PyFloat_AS_DOUBLE(value);
            std::memcpy(at, &v, stride);
            continue;
        }
        other.clear();  // anything else, and the errors, as the general encoder does them
        const py::object held = py::reinterpret_borrow<py::object>(value);
        encode_argument(held, 0, first_index + i, other);
        std::memcpy(at, other.data(), stride);
        // Its __index__ or __float__ may have changed the list under us.
        if (static_cast<std::size_t>(PySequence_Fast_GET_SIZE(sequence.ptr())) != n)
            throw py::value_error("the list of items changed while it was encoded");
        values = PySequence_Fast_ITEMS(sequence.ptr());
    }
    items.count = n;
    return true;
}

bool Signature::fits(const WireType& type, long long v) {
    const std::size_t bits = 8 * type.size;
    if (type.kind == WireType::Kind::unsigned_int)
        return v >= 0 && (bits >= 64 || static_cast<unsigned long long>(v) < (1ULL << bits));
    return bits >= 64 || (v >= -(1LL << (bits - 1)) && v < (1LL << (bits - 1)));
}

bool Signature::format_matches(std::string_view format, const WireType& type) {
    if (!format.empty() && (format[0] == '@' || format[0] == '=' || format[0] == '<'))
        format.remove_prefix(1);
    if (format.size() != 1) return false;
    const char c = format[0];
    switch (type.kind) {
        case WireType::Kind::signed_int:
            return std::string_view("bhilq").find(c) != std::string_view::npos;
        case WireType::Kind::unsigned_int:
            return std::string_view("BHILQ").find(c) != std::string_view::npos;
        case WireType::Kind::real:
            return c == 'f' || c == 'd';  // the itemsize tells which
        case WireType::Kind::boolean:
            return c == '?';
        default:
            return false;
    }
}

std::optional<py::list> Signature::packed_numbers(const Job& job) const {
    const WireType& type = result_;
    const std::size_t n = job.size();
    const char* at = job.result(0).first;  // settled: nothing writes there any more
    auto build = [&](auto read) {
        py::list out(n);
        for (std::size_t i = 0; i < n; ++i) {
            PyObject* value = read(at + i * type.size);
            if (value == nullptr) throw py::error_already_set();
            PyList_SET_ITEM(out.ptr(), static_cast<Py_ssize_t>(i), value);
        }
        return out;
    };
    auto load = [](const char* p, auto zero) {
        decltype(zero) v;
        std::memcpy(&v, p, sizeof v);
        return v;
    };
    switch (type.kind) {
        case WireType::Kind::signed_int:
            if (type.size == 4)
                return build(
                    [&](const char* p) { return PyLong_FromLong(load(p, std::int32_t{})); });
            if (type.size == 8)
                return build(
                    [&](const char* p) { return PyLong_FromLongLong(load(p, std::int64_t{})); });
            return std::nullopt;
        case WireType::Kind::unsigned_int:
            if (type.size == 4)
                return build([&](const char* p) {
                    return PyLong_FromUnsignedLong(load(p, std::uint32_t{}));
                });
            if (type.size == 8)
                return build([&](const char* p) {
                    return PyLong_FromUnsignedLongLong(load(p, std::uint64_t{}));
                });
            return std::nullopt;
        case WireType::Kind::real:
            if (type.size == 8)
                return build([&](const char* p) { return PyFloat_FromDouble(load(p, double{})); });
            return build([&](const char* p) { return PyFloat_FromDouble(load(p, float{})); });
        default:
            return std::nullopt;
    }
}

py::object Signature::decode_result(const Job& job, std::size_t index) const {
    if (result_.kind == WireType::Kind::none) return py::none();
    const auto [bytes, size] = job.result(index);
    Reader in(bytes, size);
    return decode(result_, in);
}

}  // namespace shmpool::python
