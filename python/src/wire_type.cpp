// Wire types: the descriptor parser, and Python values to and from the codec's bytes.
#include "wire_type.hpp"

#include <bit>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <string>

namespace py = pybind11;

namespace shmpool::python {

// Numbers are written and read as this machine's bytes, which the workers on it share; the
// codec's raw bytes are little-endian on every machine shmpool runs on.
static_assert(std::endian::native == std::endian::little);

namespace {

class Parser {
  public:
    explicit Parser(std::string_view text) : text_(text) {}
    WireType parse_all() {
        WireType t = parse();
        if (at_ != text_.size()) fail();
        return t;
    }
    // A user's own Codec is known only as the rest of its bytes: only a whole argument or
    // result can be one, never a part of another type.
    static bool has_nested_opaque(const WireType& t) {
        for (const WireType& item : t.items)
            if (item.kind == WireType::Kind::opaque || has_nested_opaque(item)) return true;
        return false;
    }

  private:
    WireType parse() {
        const std::size_t start = at_;
        std::string_view word = name();
        WireType t;
        auto scalar = [&](WireType::Kind kind, std::size_t size) {
            t.kind = kind;
            t.size = size;
        };
        if (word == "bool") {
            scalar(WireType::Kind::boolean, 1);
        } else if (word == "char") {
            scalar(WireType::Kind::character, 1);
        } else if (word == "i8" || word == "i16" || word == "i32" || word == "i64") {
            scalar(WireType::Kind::signed_int, bits(word) / 8);
        } else if (word == "u8" || word == "u16" || word == "u32" || word == "u64") {
            scalar(WireType::Kind::unsigned_int, bits(word) / 8);
        } else if (word == "f32" || word == "f64") {
            scalar(WireType::Kind::real, bits(word) / 8);
        } else if (word == "str") {
            t.kind = WireType::Kind::str;
        } else if (word == "opaque") {
            t.kind = WireType::Kind::opaque;
        } else if (word == "void") {
            t.kind = WireType::Kind::none;
        } else if (word == "raw") {
            expect('<');
            scalar(WireType::Kind::raw, number());
            expect('>');
        } else if (word == "arr") {
            expect('<');
            t.kind = WireType::Kind::array;
            t.items.push_back(parse());
            expect(',');
            t.count = number();
            expect('>');
            if (!t.items[0].fixed()) fail();
            t.size = t.count * t.items[0].size;
        } else if (word == "vec" || word == "opt") {
            expect('<');
            t.kind = word == "vec" ? WireType::Kind::vec : WireType::Kind::opt;
            t.items.push_back(parse());
            expect('>');
        } else if (word == "tuple") {
            expect('<');
            t.kind = WireType::Kind::tuple;
            do {
                t.items.push_back(parse());
            } while (accept(','));
            expect('>');
        } else {
            fail();
        }
        if (t.kind == WireType::Kind::raw && t.size == 0) fail();
        t.text = std::string(text_.substr(start, at_ - start));
        return t;
    }
    std::string_view name() {
        const std::size_t start = at_;
        while (at_ < text_.size() && std::isalnum(static_cast<unsigned char>(text_[at_])))
            ++at_;
        return text_.substr(start, at_ - start);
    }
    std::size_t number() {
        const std::string_view digits = name();
        if (digits.empty() || digits.size() > 12) fail();
        std::size_t n = 0;
        for (const char c : digits) {
            if (c < '0' || c > '9') fail();
            n = n * 10 + static_cast<std::size_t>(c - '0');
        }
        return n;
    }
    static std::size_t bits(std::string_view word) {
        return std::stoul(std::string(word.substr(1)));
    }
    bool accept(char c) {
        if (at_ < text_.size() && text_[at_] == c) {
            ++at_;
            return true;
        }
        return false;
    }
    void expect(char c) {
        if (!accept(c)) fail();
    }
    [[noreturn]] void fail() const {
        throw std::invalid_argument("'" + std::string(text_) + "' is not a wire type");
    }
    std::string_view text_;
    std::size_t at_ = 0;
};

std::string type_name(py::handle value) {
    return py::str(py::type::handle_of(value).attr("__name__"));
}

[[noreturn]] void mismatch(const WireType& type, py::handle value) {
    throw WireError(PyExc_TypeError, "expects " + type.text + ", got " + type_name(value));
}

// The Python error raised meanwhile, as a WireError of the same type.
[[noreturn]] void python_error(const WireType& type) {
    py::error_already_set error;
    PyObject* kind = error.matches(PyExc_OverflowError) ? PyExc_OverflowError : PyExc_TypeError;
    throw WireError(kind, "expects " + type.text + ": " + error.what());
}

bool is_integer(py::handle value) {
    return PyLong_Check(value.ptr()) || (!PyFloat_Check(value.ptr()) && PyIndex_Check(value.ptr()));
}

void put_integer(const WireType& type, py::handle value, std::string& out) {
    if (!is_integer(value)) mismatch(type, value);
    const py::object index = py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
    if (!index) python_error(type);
    const std::size_t bytes = type.size;
    if (type.kind == WireType::Kind::signed_int) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
        if (v == -1 && PyErr_Occurred()) python_error(type);
        const long long limit = bytes == 8 ? 0 : (1LL << (8 * bytes - 1));
        if (overflow != 0 || (bytes < 8 && (v < -limit || v >= limit)))
            throw WireError(PyExc_OverflowError,
                            std::string(py::str(index)) + " does not fit " + type.text);
        const auto u = static_cast<unsigned long long>(v);
        out.append(reinterpret_cast<const char*>(&u), bytes);  // little-endian: the low bytes
    } else {
        const unsigned long long v = PyLong_AsUnsignedLongLong(index.ptr());
        if (v == static_cast<unsigned long long>(-1) && PyErr_Occurred()) {
            PyErr_Clear();
            throw WireError(PyExc_OverflowError,
                            std::string(py::str(index)) + " does not fit " + type.text);
        }
        if (bytes < 8 && v >= (1ULL << (8 * bytes)))
            throw WireError(PyExc_OverflowError,
                            std::string(py::str(index)) + " does not fit " + type.text);
        out.append(reinterpret_cast<const char*>(&v), bytes);
    }
}

void put_real(const WireType& type, py::handle value, std::string& out) {
    if (PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr())) mismatch(type, value);
    const double v = PyFloat_AsDouble(value.ptr());
    if (v == -1.0 && PyErr_Occurred()) python_error(type);
    if (type.size == 4) {
        if (std::isfinite(v) && std::fabs(v) > std::numeric_limits<float>::max())
            throw WireError(PyExc_OverflowError, std::to_string(v) + " does not fit f32");
        const auto f = static_cast<float>(v);
        out.append(reinterpret_cast<const char*>(&f), sizeof f);
    } else {
        out.append(reinterpret_cast<const char*>(&v), sizeof v);
    }
}

// Bytes of a bytes-like object, or of a str as UTF-8 (lone surrogates as the bytes they escape).
bool text_bytes(py::handle value, std::string& bytes) {
    if (PyUnicode_Check(value.ptr())) {
        const py::object encoded = py::reinterpret_steal<py::object>(
            PyUnicode_AsEncodedString(value.ptr(), "utf-8", "surrogateescape"));
        if (!encoded) {
            PyErr_Clear();
            return false;
        }
        bytes.assign(PyBytes_AS_STRING(encoded.ptr()),
                     static_cast<std::size_t>(PyBytes_GET_SIZE(encoded.ptr())));
        return true;
    }
    if (PyObject_CheckBuffer(value.ptr())) {
        Py_buffer view;
        if (PyObject_GetBuffer(value.ptr(), &view, PyBUF_C_CONTIGUOUS) != 0) {
            PyErr_Clear();
            return false;
        }
        bytes.assign(static_cast<const char*>(view.buf), static_cast<std::size_t>(view.len));
        PyBuffer_Release(&view);
        return true;
    }
    return false;
}

// The name of a shared block object: shmpool's SharedArray or SharedMemory, or CPython's.
bool block_name(py::handle value, std::string& name) {
    py::object attribute;
    if (py::hasattr(value, "_shmpool_block_name")) {
        attribute = value.attr("_shmpool_block_name");
    } else {
        const py::handle type = py::type::handle_of(value);
        if (std::string(py::str(type.attr("__module__"))) != "multiprocessing.shared_memory" ||
            std::string(py::str(type.attr("__name__"))) != "SharedMemory")
            return false;
        attribute = value.attr("name");
    }
    if (!PyUnicode_Check(attribute.ptr())) return false;
    name = attribute.cast<std::string>();
    return true;
}

void put_u64(std::uint64_t n, std::string& out) {
    out.append(reinterpret_cast<const char*>(&n), sizeof n);
}

}  // namespace

WireType parse_wire_type(std::string_view text) {
    WireType t = Parser(text).parse_all();
    if (Parser::has_nested_opaque(t)) {  // opaque as a whole: refused in, bytes out
        t.kind = WireType::Kind::opaque;
        t.items.clear();
        t.size = 0;
    }
    return t;
}

std::size_t min_wire_size(const WireType& type) {
    switch (type.kind) {
        case WireType::Kind::str:
        case WireType::Kind::vec:
            return sizeof(std::uint64_t);  // the length
        case WireType::Kind::opt:
            return 1;
        case WireType::Kind::tuple: {
            std::size_t n = 0;
            for (const WireType& item : type.items)
                n += min_wire_size(item);
            return n;
        }
        default:
            return type.size;
    }
}

void encode(const WireType& type, py::handle value, std::string& out) {
    switch (type.kind) {
        case WireType::Kind::boolean: {
            if (!PyBool_Check(value.ptr()) && !is_integer(value)) mismatch(type, value);
            const int truth = PyObject_IsTrue(value.ptr());
            if (truth < 0) python_error(type);
            if (!PyBool_Check(value.ptr()) && PyLong_AsLong(value.ptr()) != truth)
                throw WireError(PyExc_ValueError,
                                std::string(py::str(value)) + " is not a bool (0 or 1)");
            out.push_back(static_cast<char>(truth));
            return;
        }
        case WireType::Kind::character: {
            std::string bytes;
            if (is_integer(value)) {  // C++'s char is signed here: -128 to 255 both fit
                const py::object index =
                    py::reinterpret_steal<py::object>(PyNumber_Index(value.ptr()));
                if (!index) python_error(type);
                int overflow = 0;
                const long long v = PyLong_AsLongLongAndOverflow(index.ptr(), &overflow);
                if (overflow != 0 || v < -128 || v > 255)
                    throw WireError(PyExc_OverflowError,
                                    std::string(py::str(index)) + " does not fit char");
                out.push_back(static_cast<char>(v));
                return;
            }
            if (!text_bytes(value, bytes)) mismatch(type, value);
            if (bytes.size() != 1)
                throw WireError(PyExc_ValueError,
                                "expects char, one byte, got " + std::to_string(bytes.size()));
            out.push_back(bytes[0]);
            return;
        }
        case WireType::Kind::signed_int:
        case WireType::Kind::unsigned_int:
            put_integer(type, value, out);
            return;
        case WireType::Kind::real:
            put_real(type, value, out);
            return;
        case WireType::Kind::raw: {
            std::string bytes;
            if (PyUnicode_Check(value.ptr()) || !text_bytes(value, bytes)) mismatch(type, value);
            if (bytes.size() != type.size)
                throw WireError(PyExc_ValueError, "expects " + type.text + ", " +
                                                      std::to_string(type.size) + " bytes, got " +
                                                      std::to_string(bytes.size()));
            out += bytes;
            return;
        }
        case WireType::Kind::str: {
            std::string bytes;  // a SharedArray is a buffer too: its name first
            if ((PyUnicode_Check(value.ptr()) || !block_name(value, bytes)) &&
                !text_bytes(value, bytes))
                mismatch(type, value);
            put_u64(bytes.size(), out);
            out += bytes;
            return;
        }
        case WireType::Kind::array:
        case WireType::Kind::vec: {
            const WireType& element = type.items[0];
            if (PyUnicode_Check(value.ptr()) || PyBytes_Check(value.ptr()) ||
                !PySequence_Check(value.ptr()))
                mismatch(type, value);
            const py::sequence items = py::reinterpret_borrow<py::sequence>(value);
            const std::size_t n = items.size();
            if (type.kind == WireType::Kind::array && n != type.count)
                throw WireError(PyExc_ValueError, "expects " + type.text + ", " +
                                                      std::to_string(type.count) + " values, got " +
                                                      std::to_string(n));
            if (type.kind == WireType::Kind::vec) put_u64(n, out);
            for (std::size_t i = 0; i < n; ++i) {
                try {
                    encode(element, items[i], out);
                } catch (const WireError& e) {
                    throw WireError(e.python_type(),
                                    "element " + std::to_string(i) + ": " + e.what());
                }
            }
            return;
        }
        case WireType::Kind::opt:
            out.push_back(value.is_none() ? 0 : 1);
            if (!value.is_none()) encode(type.items[0], value, out);
            return;
        case WireType::Kind::tuple: {
            if (PyUnicode_Check(value.ptr()) || !PySequence_Check(value.ptr()))
                mismatch(type, value);
            const py::sequence members = py::reinterpret_borrow<py::sequence>(value);
            if (members.size() != type.items.size())
                throw WireError(PyExc_ValueError,
                                "expects " + type.text + ", " + std::to_string(type.items.size()) +
                                    " values, got " + std::to_string(members.size()));
            for (std::size_t i = 0; i < type.items.size(); ++i)
                encode(type.items[i], members[i], out);
            return;
        }
        case WireType::Kind::opaque:
            throw WireError(PyExc_TypeError,
                            "has a C++ type with a Codec of its own, which Python cannot encode");
        case WireType::Kind::none:
            throw WireError(PyExc_TypeError, "void is not an argument type");
    }
}

py::object decode(const WireType& type, Reader& in) {
    switch (type.kind) {
        case WireType::Kind::boolean:
            return py::bool_(in.raw<std::uint8_t>() != 0);
        case WireType::Kind::character: {
            const char c = in.raw<char>();
            return py::bytes(&c, 1);
        }
        case WireType::Kind::signed_int:
            switch (type.size) {
                case 1:
                    return py::int_(in.raw<std::int8_t>());
                case 2:
                    return py::int_(in.raw<std::int16_t>());
                case 4:
                    return py::int_(in.raw<std::int32_t>());
                default:
                    return py::int_(in.raw<std::int64_t>());
            }
        case WireType::Kind::unsigned_int:
            switch (type.size) {
                case 1:
                    return py::int_(in.raw<std::uint8_t>());
                case 2:
                    return py::int_(in.raw<std::uint16_t>());
                case 4:
                    return py::int_(in.raw<std::uint32_t>());
                default:
                    return py::int_(in.raw<std::uint64_t>());
            }
        case WireType::Kind::real:
            return type.size == 4 ? py::float_(in.raw<float>()) : py::float_(in.raw<double>());
        case WireType::Kind::raw: {
            const char* bytes = in.view(type.size);
            return py::bytes(bytes, type.size);
        }
        case WireType::Kind::str: {
            const auto n = in.raw<std::uint64_t>();
            if (n > in.left()) throw std::length_error("truncated task result");
            const char* bytes = in.view(n);
            auto text = py::reinterpret_steal<py::object>(
                PyUnicode_DecodeUTF8(bytes, static_cast<Py_ssize_t>(n), "surrogateescape"));
            if (!text) throw py::error_already_set();
            return text;
        }
        case WireType::Kind::array:
        case WireType::Kind::vec: {
            const std::uint64_t n =
                type.kind == WireType::Kind::vec ? in.raw<std::uint64_t>() : type.count;
            // Bounded by the bytes there are, before the list is made.
            if (const std::size_t least = min_wire_size(type.items[0]);
                least != 0 && n > in.left() / least)
                throw std::length_error("truncated task result");
            py::list out(n);
            for (std::uint64_t i = 0; i < n; ++i)
                out[i] = decode(type.items[0], in);
            return out;
        }
        case WireType::Kind::opt:
            if (in.raw<std::uint8_t>() == 0) return py::none();
            return decode(type.items[0], in);
        case WireType::Kind::tuple: {
            py::tuple out(type.items.size());
            for (std::size_t i = 0; i < type.items.size(); ++i)
                out[i] = decode(type.items[i], in);
            return out;
        }
        case WireType::Kind::opaque: {
            // A user's Codec: its bytes, as they came (the rest of the result).
            const std::size_t n = in.left();
            const char* bytes = in.view(n);
            return py::bytes(bytes, n);
        }
        case WireType::Kind::none:
            return py::none();
    }
    return py::none();
}

}  // namespace shmpool::python
