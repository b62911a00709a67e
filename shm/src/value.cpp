// Value helpers: Python type names and CPython-exact reprs of None, bool, int, float, str, bytes.
#include "shmpool/shm/value.hpp"

#include <charconv>
#include <cmath>
#include <stdexcept>
#include <system_error>

#include "utf8.hpp"

namespace shmpool {

void Value::throw_int_out_of_range() {
    throw std::out_of_range("integer does not fit a signed 64-bit int (CPython's 'q' format)");
}

std::string_view type_name(Value::Type type) noexcept {
    switch (type) {
        case Value::Type::none:
            return "NoneType";
        case Value::Type::boolean:
            return "bool";
        case Value::Type::integer:
            return "int";
        case Value::Type::floating:
            return "float";
        case Value::Type::string:
            return "str";
        case Value::Type::bytes:
            return "bytes";
    }
    return "?";
}

std::string repr_float(double d) {
    if (std::isnan(d)) return "nan";
    if (std::isinf(d)) return d < 0 ? "-inf" : "inf";
    // Shortest round-trip digits, then CPython's layout: fixed notation when the decimal point
    // falls within (-4, 16] of the first digit, exponent notation with two-digit exponents else.
    char buf[64];
    auto res = std::to_chars(buf, buf + sizeof buf, std::fabs(d), std::chars_format::scientific);
    std::string_view sci(buf, static_cast<std::size_t>(res.ptr - buf));
    std::size_t e = sci.find('e');
    std::string digits;
    for (char c : sci.substr(0, e)) {
        if (c != '.') digits += c;
    }
    int exponent = 0;
    std::string_view exp_text = sci.substr(e + 1);
    if (!exp_text.empty() && exp_text.front() == '+') exp_text.remove_prefix(1);
    std::from_chars(exp_text.data(), exp_text.data() + exp_text.size(), exponent);
    while (digits.size() > 1 && digits.back() == '0')
        digits.pop_back();

    std::string out = std::signbit(d) ? "-" : "";
    int decpt = exponent + 1;
    int n = static_cast<int>(digits.size());
    if (decpt > -4 && decpt <= 16) {
        if (decpt <= 0) {
            out += "0.";
            out.append(static_cast<std::size_t>(-decpt), '0');
            out += digits;
        } else if (decpt >= n) {
            out += digits;
            out.append(static_cast<std::size_t>(decpt - n), '0');
            out += ".0";
        } else {
            out += digits.substr(0, static_cast<std::size_t>(decpt));
            out += '.';
            out += digits.substr(static_cast<std::size_t>(decpt));
        }
    } else {
        out += digits[0];
        if (n > 1) {
            out += '.';
            out += digits.substr(1);
        }
        out += fmt::format("e{}{:02d}", exponent < 0 ? '-' : '+', std::abs(exponent));
    }
    return out;
}

namespace {

char quote_for(std::string_view text) {
    // CPython prefers single quotes unless the text has one and no double quote.
    return (text.find('\'') != std::string_view::npos && text.find('"') == std::string_view::npos)
               ? '"'
               : '\'';
}

void append_escape(std::string& out, unsigned char c, char quote) {
    switch (c) {
        case '\\':
            out += "\\\\";
            return;
        case '\t':
            out += "\\t";
            return;
        case '\n':
            out += "\\n";
            return;
        case '\r':
            out += "\\r";
            return;
        default:
            break;
    }
    if (c == static_cast<unsigned char>(quote)) {
        out += '\\';
        out += static_cast<char>(c);
    } else if (c < 0x20 || c >= 0x7f) {
        out += fmt::format("\\x{:02x}", c);
    } else {
        out += static_cast<char>(c);
    }
}

}  // namespace

std::string repr_str(std::string_view utf8) {
    char quote = quote_for(utf8);
    std::string out(1, quote);
    std::size_t i = 0;
    while (i < utf8.size()) {
        auto c = static_cast<unsigned char>(utf8[i]);
        if (c < 0x80) {
            append_escape(out, c, quote);
            ++i;
            continue;
        }
        std::size_t len = detail::utf8_sequence_length(c);
        if (len == 0 || i + len > utf8.size()) {  // not UTF-8: show the byte (never happens for
            out += fmt::format("\\x{:02x}", c);   // validated items)
            ++i;
            continue;
        }
        char32_t cp = detail::utf8_decode(utf8.substr(i, len));
        // C1 controls, NBSP and the soft hyphen are not printable for CPython: escaped.
        if (cp < 0xa1 || cp == 0xad) {
            out += fmt::format("\\x{:02x}", static_cast<unsigned>(cp));
        } else if (cp == 0x2028 || cp == 0x2029) {
            out += fmt::format("\\u{:04x}", static_cast<unsigned>(cp));
        } else {
            out.append(utf8.substr(i, len));
        }
        i += len;
    }
    out += quote;
    return out;
}

std::string repr_bytes(std::string_view raw) {
    char quote = quote_for(raw);
    std::string out = "b";
    out += quote;
    for (char ch : raw)
        append_escape(out, static_cast<unsigned char>(ch), quote);
    out += quote;
    return out;
}

std::string repr(const Value& value) {
    switch (value.type()) {
        case Value::Type::none:
            return "None";
        case Value::Type::boolean:
            return value.get<bool>() ? "True" : "False";
        case Value::Type::integer:
            return fmt::format("{}", value.get<std::int64_t>());
        case Value::Type::floating:
            return repr_float(value.get<double>());
        case Value::Type::string:
            return repr_str(value.get<std::string>());
        case Value::Type::bytes:
            return repr_bytes(value.get<Bytes>().view());
    }
    return "?";
}

}  // namespace shmpool
