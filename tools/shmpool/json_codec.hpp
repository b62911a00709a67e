// The CLI's JSON encoding of ShareableList values (the contract in docs/cli.md):
// int <-> integer, float <-> number with '.' or exponent (non-finite:
// {"float":"nan"|"inf"|"-inf"}), bool <-> true/false, None <-> null, str <-> string, bytes <->
// {"bytes":"<lowercase hex>"}.
#pragma once

#include <nlohmann/json.hpp>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "shmpool/shm/value.hpp"

namespace shmpool::cli {

/// Bad JSON text, or JSON that is not an encodable value.
class JsonError : public std::invalid_argument {
  public:
    using std::invalid_argument::invalid_argument;
};

/// Parses JSON text strictly: integers outside the signed 64-bit range are errors, not floats.
nlohmann::json parse_json(std::string_view text);

/// Decodes one value; throws JsonError naming what is unsupported.
Value value_from_json(const nlohmann::json& j);
/// Decodes a JSON array of values; throws JsonError.
std::vector<Value> values_from_json(const nlohmann::json& j);

nlohmann::json value_to_json(const Value& v);

}  // namespace shmpool::cli
