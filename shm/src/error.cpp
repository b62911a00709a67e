// The "shmpool" error category and the one place that turns an errno into an exception.
#include "shmpool/shm/error.hpp"

#include "internal.hpp"

namespace shmpool {
namespace {

class Category : public std::error_category {
  public:
    const char* name() const noexcept override { return "shmpool"; }
    std::string message(int code) const override {
        switch (static_cast<errc>(code)) {
            case errc::corrupted_block:
                return "corrupted block";
            case errc::invalid_utf8:
                return "invalid UTF-8 in a str item";
        }
        return "unknown shmpool error";
    }
};

}  // namespace

const std::error_category& error_category() noexcept {
    static const Category category;
    return category;
}

namespace detail {

void throw_errno(int error, const std::string& what) {
    throw std::system_error(error, std::generic_category(), what);
}

}  // namespace detail
}  // namespace shmpool
