// shmpool._core: the extension under the shmpool Python package. A Mapping owns one mapping of a
// block and exports it through the buffer protocol; memoryviews and numpy arrays over it keep it
// alive, so close() never unmaps memory that a view still points to (the mapping goes with the
// last one). ShareableList reads and writes items through the C++ ShareableList.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cerrno>
#include <optional>
#include <string>
#include <system_error>
#include <utility>

#include "pool_binding.hpp"
#include "shmpool/shm/error.hpp"
#include "shmpool/shm/shareable_list.hpp"
#include "shmpool/shm/shared_memory.hpp"
#include "shmpool/shm/tracker.hpp"
#include "shmpool/shm/value.hpp"

namespace py = pybind11;
using shmpool::SharedMemory;
using shmpool::Value;

namespace {

// One mapping of a block, exported as bytes. close() only forgets the block's name for this
// object; the memory is unmapped when the last view over it is gone.
class Mapping {
  public:
    explicit Mapping(SharedMemory block) : block_(std::move(block)) {}
    std::string name() const { return block_.name(); }
    std::size_t size() const { return block_.size(); }
    bool read_only() const { return block_.read_only(); }
    py::buffer_info buffer() {
        return {const_cast<std::byte*>(block_.data()),
                1,
                py::format_descriptor<unsigned char>::format(),
                1,
                {block_.size()},
                {1},
                block_.read_only()};
    }
    const SharedMemory& block() const { return block_; }

  private:
    SharedMemory block_;
};

// Creates, opens, or opens-or-creates, as CPython's shm_open flags say (O_CREAT, O_EXCL).
std::shared_ptr<Mapping> open_block(const std::string& name, bool create, bool exclusive,
                                    std::size_t size, bool track, unsigned mode) {
    py::gil_scoped_release unlocked;  // may start the tracker
    if (create && exclusive)
        return std::make_shared<Mapping>(
            SharedMemory::create(name, size, {.track = track, .mode = mode}));
    while (create) {  // O_CREAT alone: the block if it exists, else a new one
        try {
            return std::make_shared<Mapping>(SharedMemory::attach(name));
        } catch (const std::system_error& e) {
            if (e.code() != std::errc::no_such_file_or_directory) throw;
        }
        try {
            return std::make_shared<Mapping>(
                SharedMemory::create(name, size, {.track = track, .mode = mode}));
        } catch (const std::system_error& e) {  // made by another process meanwhile: attach it
            if (e.code() != std::errc::file_exists) throw;
        }
    }
    return std::make_shared<Mapping>(SharedMemory::attach(name));
}

// A value too big for its slot (std::length_error) as CPython's ValueError: its wording first,
// which code (and CPython's tests) match on, then shmpool's detail.
template <class F>
auto fits_storage(F f) {
    try {
        return f();
    } catch (const std::length_error& e) {
        throw py::value_error(std::string("exceeds available storage: ") + e.what());
    }
}

py::object to_python(const Value& v) {
    switch (v.type()) {
        case Value::Type::none:
            return py::none();
        case Value::Type::boolean:
            return py::bool_(v.get<bool>());
        case Value::Type::integer:
            return py::int_(v.get<std::int64_t>());
        case Value::Type::floating:
            return py::float_(v.get<double>());
        case Value::Type::string:
            return py::str(v.get<std::string>());
        case Value::Type::bytes: {
            const std::string_view b = v.get<shmpool::Bytes>().view();
            return py::bytes(b.data(), b.size());
        }
    }
    return py::none();
}

Value from_python(const py::handle& o) {
    if (o.is_none()) return Value(shmpool::None{});
    if (py::isinstance<py::bool_>(o)) return Value(o.cast<bool>());
    if (py::isinstance<py::int_>(o)) {
        int overflow = 0;
        const long long v = PyLong_AsLongLongAndOverflow(o.ptr(), &overflow);
        if (overflow != 0) {  // what CPython's struct.pack_into raises
            PyErr_SetString(py::module_::import("struct").attr("error").ptr(),
                            "int too large for a ShareableList item (64 bits)");
            throw py::error_already_set();
        }
        if (v == -1 && PyErr_Occurred()) throw py::error_already_set();
        return Value(static_cast<std::int64_t>(v));
    }
    if (py::isinstance<py::float_>(o)) return Value(o.cast<double>());
    if (py::isinstance<py::str>(o)) {
        Py_ssize_t size = 0;
        const char* utf8 = PyUnicode_AsUTF8AndSize(o.ptr(), &size);  // lone surrogates: an error
        if (utf8 == nullptr) throw py::error_already_set();
        return Value(std::string(utf8, static_cast<std::size_t>(size)));
    }
    if (py::isinstance<py::bytes>(o)) {
        return Value(shmpool::Bytes(o.cast<std::string>()));
    }
    throw py::type_error("ShareableList items must be int, float, bool, str, bytes or None, not " +
                         std::string(py::str(o.get_type().attr("__name__"))));
}

}  // namespace

PYBIND11_MODULE(_core, m) {
    m.doc() = "shmpool's C++ shared memory, for the shmpool Python package";

    // std::system_error carries an errno: OSError(errno, message) becomes FileNotFoundError,
    // FileExistsError, ... as Python's own calls do.
    // NOLINTNEXTLINE(performance-unnecessary-value-param): the signature pybind11 takes
    py::register_exception_translator([](std::exception_ptr p) {
        try {
            if (p) std::rethrow_exception(p);
        } catch (const shmpool::CorruptedBlock& e) {
            PyErr_SetString(PyExc_ValueError, e.what());
        } catch (const std::system_error& e) {
            if (e.code().category() == std::generic_category() ||
                e.code().category() == std::system_category()) {
                py::object error =
                    py::reinterpret_borrow<py::object>(PyExc_OSError)(e.code().value(), e.what());
                PyErr_SetObject(PyExc_OSError, error.ptr());
            } else {
                PyErr_SetString(PyExc_OSError, e.what());
            }
        }
    });

    py::class_<Mapping, std::shared_ptr<Mapping>>(m, "Mapping", py::buffer_protocol())
        .def_buffer(&Mapping::buffer)
        .def_property_readonly("name", &Mapping::name)
        .def_property_readonly("size", &Mapping::size)
        .def_property_readonly("read_only", &Mapping::read_only);

    m.def("open", &open_block, py::arg("name"), py::arg("create"), py::arg("exclusive"),
          py::arg("size"), py::arg("track"), py::arg("mode") = 0600,
          "Creates (create, exclusive), opens or creates (create), or attaches a block.");
    // This process's tracker and its node in the registry, before any thread of Python's needs
    // the environment (the tracker's variable is set here, once): a block handed to this process
    // needs it registered.
    m.def("ensure_tracker", [] { return shmpool::Tracker::ensure(); });
    m.def(
        "transfer_ownership",
        [](const std::string& name, pid_t pid) {
            py::gil_scoped_release unlocked;
            shmpool::transfer_ownership(name, pid);
        },
        py::arg("name"), py::arg("pid"));
    m.def(
        "adopt_ownership",
        [](const std::string& name) {
            py::gil_scoped_release unlocked;
            shmpool::adopt_ownership(name);
        },
        py::arg("name"));
    m.def(
        "unlink",
        [](const std::string& name) {
            py::gil_scoped_release unlocked;
            SharedMemory::remove(name);
        },
        py::arg("name"));
    // The C++ ShareableList: CPython's layout, with its fixes (str sized in UTF-8 bytes, trailing
    // NULs refused, a corrupted block an error).
    py::class_<shmpool::ShareableList>(m, "List")
        .def_static(
            "create",
            [](const std::string& name, const py::sequence& items, bool track) {
                std::vector<Value> values;
                for (const auto& item : items)
                    values.push_back(from_python(item));
                py::gil_scoped_release unlocked;
                return fits_storage(
                    [&] { return shmpool::ShareableList::create(name, values, {.track = track}); });
            },
            py::arg("name"), py::arg("items"), py::arg("track"))
        .def_static(
            "attach",
            [](const std::string& name) {
                py::gil_scoped_release unlocked;
                return shmpool::ShareableList::attach(name);
            },
            py::arg("name"))
        .def("__len__", &shmpool::ShareableList::size)
        .def("get",
             [](const shmpool::ShareableList& l, std::ptrdiff_t i) { return to_python(l.get(i)); })
        .def("set", [](shmpool::ShareableList& l, std::ptrdiff_t i,
                       const py::handle& v) { fits_storage([&] { l.set(i, from_python(v)); }); })
        .def("item_format", &shmpool::ShareableList::item_format)
        .def_property_readonly("format", &shmpool::ShareableList::format)
        .def_property_readonly("name", [](const shmpool::ShareableList& l) { return l.name(); });

    shmpool::python::bind_pool(m);
}
