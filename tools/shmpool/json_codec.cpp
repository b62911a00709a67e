// JSON <-> Value for the CLI, with a strict SAX parser that refuses out-of-range integers.
#include "json_codec.hpp"

#include <fmt/format.h>

#include <cmath>
#include <cstdint>
#include <limits>

namespace shmpool::cli {
namespace {

using json = nlohmann::json;

// Builds a DOM like nlohmann's own parser but fails where that one silently converts an
// integer that overflows 64 bits into a float.
class StrictBuilder
    : public nlohmann::json_sax<json> {  // NOLINT(bugprone-exception-escape): only bad_alloc
  public:
    json root;
    std::string error;

    bool null() override { return add(nullptr); }
    bool boolean(bool b) override { return add(b); }
    bool number_integer(number_integer_t i) override { return add(i); }
    bool number_unsigned(number_unsigned_t u) override {
        if (u > static_cast<number_unsigned_t>(std::numeric_limits<std::int64_t>::max())) {
            return fail(fmt::format("integer {} is out of the signed 64-bit range", u));
        }
        return add(static_cast<std::int64_t>(u));
    }
    bool number_float(number_float_t d, const string_t& text) override {
        if (text.find_first_of(".eE") == string_t::npos) {
            return fail(fmt::format("integer {} is out of the signed 64-bit range", text));
        }
        if (!std::isfinite(d))
            return fail(fmt::format("number {} is out of the double range", text));
        return add(d);
    }
    bool string(string_t& s) override { return add(s); }
    bool binary(binary_t&) override { return fail("binary values are not supported"); }
    bool start_object(std::size_t) override { return push(json::object()); }
    bool key(string_t& k) override {
        key_ = k;
        return true;
    }
    bool end_object() override {
        stack_.pop_back();
        return true;
    }
    bool start_array(std::size_t) override { return push(json::array()); }
    bool end_array() override {
        stack_.pop_back();
        return true;
    }
    bool parse_error(std::size_t, const std::string&,
                     const nlohmann::detail::exception& e) override {
        std::string what = e.what();
        // Drop nlohmann's "[json.exception.parse_error.101] " prefix.
        if (auto p = what.find("] "); p != std::string::npos) what = what.substr(p + 2);
        return fail(what);
    }

  private:
    json* place(json value) {
        if (stack_.empty()) {
            root = std::move(value);
            return &root;
        }
        json& top = *stack_.back();
        if (top.is_array()) {
            top.push_back(std::move(value));
            return &top.back();
        }
        json& slot = top[key_];
        slot = std::move(value);
        return &slot;
    }
    bool add(json value) {
        place(std::move(value));
        return true;
    }
    bool push(json container) {
        stack_.push_back(place(std::move(container)));
        return true;
    }
    bool fail(std::string message) {
        if (error.empty()) error = std::move(message);
        return false;
    }

    std::vector<json*> stack_;
    std::string key_;
};

int hex_digit(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

Bytes bytes_from_hex(const std::string& hex) {
    if (hex.size() % 2 != 0) throw JsonError(fmt::format("bytes hex '{}' has an odd length", hex));
    std::string raw;
    raw.reserve(hex.size() / 2);
    for (std::size_t i = 0; i < hex.size(); i += 2) {
        int hi = hex_digit(hex[i]);
        int lo = hex_digit(hex[i + 1]);
        if (hi < 0 || lo < 0)
            throw JsonError(fmt::format("bytes hex '{}' is not hexadecimal", hex));
        raw += static_cast<char>(hi * 16 + lo);
    }
    return Bytes(raw);
}

}  // namespace

json parse_json(std::string_view text) {
    StrictBuilder builder;
    bool ok = json::sax_parse(text.begin(), text.end(), &builder);
    if (!ok)
        throw JsonError(fmt::format("invalid JSON: {}",
                                    builder.error.empty() ? "parse failed" : builder.error));
    return std::move(builder.root);
}

Value value_from_json(const json& j) {
    switch (j.type()) {
        case json::value_t::null:
            return none;
        case json::value_t::boolean:
            return j.get<bool>();
        case json::value_t::number_integer:
            return j.get<std::int64_t>();
        case json::value_t::number_unsigned: {
            auto u = j.get<std::uint64_t>();
            if (u > static_cast<std::uint64_t>(std::numeric_limits<std::int64_t>::max())) {
                throw JsonError(fmt::format("integer {} is out of the signed 64-bit range", u));
            }
            return static_cast<std::int64_t>(u);
        }
        case json::value_t::number_float:
            return j.get<double>();
        case json::value_t::string:
            return j.get<std::string>();
        case json::value_t::object:
            if (j.size() == 1 && j.contains("bytes") && j["bytes"].is_string()) {
                return bytes_from_hex(j["bytes"].get<std::string>());
            }
            if (j.size() == 1 && j.contains("float") && j["float"].is_string()) {
                const auto& s = j["float"].get_ref<const std::string&>();
                if (s == "nan") return std::numeric_limits<double>::quiet_NaN();
                if (s == "inf") return std::numeric_limits<double>::infinity();
                if (s == "-inf") return -std::numeric_limits<double>::infinity();
                throw JsonError(
                    fmt::format("unsupported float '{}': use \"nan\", \"inf\" or \"-inf\"", s));
            }
            throw JsonError(
                fmt::format("unsupported value {}: objects must be {{\"bytes\": \"<hex>\"}} "
                            "or {{\"float\": \"nan\"|\"inf\"|\"-inf\"}}",
                            j.dump()));
        case json::value_t::array:
            throw JsonError(fmt::format(
                "unsupported value {}: a ShareableList item cannot be a list", j.dump()));
        default:
            break;
    }
    throw JsonError(fmt::format("unsupported value {}", j.dump()));
}

std::vector<Value> values_from_json(const json& j) {
    if (!j.is_array())
        throw JsonError(fmt::format("expected a JSON array of values, got {}", j.dump()));
    std::vector<Value> values;
    values.reserve(j.size());
    for (std::size_t i = 0; i < j.size(); ++i) {
        try {
            values.push_back(value_from_json(j[i]));
        } catch (const JsonError& e) {
            throw JsonError(fmt::format("item {}: {}", i, e.what()));
        }
    }
    return values;
}

json value_to_json(const Value& v) {
    switch (v.type()) {
        case Value::Type::none:
            return nullptr;
        case Value::Type::boolean:
            return v.get<bool>();
        case Value::Type::integer:
            return v.get<std::int64_t>();
        case Value::Type::floating: {
            double d = v.get<double>();
            if (std::isnan(d)) return {{"float", "nan"}};
            if (std::isinf(d)) return {{"float", d > 0 ? "inf" : "-inf"}};
            return d;  // nlohmann writes the shortest round-trip form, with ".0" when integral
        }
        case Value::Type::string:
            return v.get<std::string>();
        case Value::Type::bytes: {
            static constexpr char hex[] = "0123456789abcdef";
            std::string out;
            for (char c : v.get<Bytes>().view()) {
                auto b = static_cast<unsigned char>(c);
                out += hex[b >> 4];
                out += hex[b & 0xf];
            }
            return {{"bytes", out}};
        }
    }
    return nullptr;
}

}  // namespace shmpool::cli
