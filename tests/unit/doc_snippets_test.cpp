// Code shown in README.md and docs/*.md is the code the test suite compiles.
//
// A Markdown file marks a snippet with `<!-- snippet: PATH#TAG -->` right before a code fence;
// the fence must hold exactly the lines between the two `// [TAG]` markers of PATH (`# [TAG]`
// in a Python file).
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>

#include "test_support.hpp"

namespace {

std::string read_file(const std::filesystem::path& p) {
    std::ifstream in(p);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

// The lines between the two `// [TAG]` lines (`# [TAG]` in Python) of a source file.
std::string tagged_region(const std::string& source, const std::string& tag, bool python) {
    std::string marker = (python ? "# [" : "// [") + tag + "]\n";
    auto a = source.find(marker);
    if (a == std::string::npos) return "<no marker " + tag + ">";
    a += marker.size();
    auto b = source.find(marker, a);
    return b == std::string::npos ? "<unterminated " + tag + ">" : source.substr(a, b - a);
}

}  // namespace

TEST(DocSnippets, EverySnippetMatchesItsCompiledSource) {
    namespace fs = std::filesystem;
    fs::path root = shmpool::test::source_dir();
    std::vector<fs::path> docs{root / "README.md"};
    for (const auto& e : fs::directory_iterator(root / "docs")) {
        if (e.path().extension() == ".md") docs.push_back(e.path());
    }
    std::regex marker(R"(<!-- snippet: ([^#]+)#([\w-]+) -->\n```\w*\n)");
    int checked = 0;
    for (const auto& doc : docs) {
        std::string text = read_file(doc);
        for (std::sregex_iterator it(text.begin(), text.end(), marker), end; it != end; ++it) {
            auto body_start = static_cast<std::size_t>(it->position() + it->length());
            auto body_end = text.find("```", body_start);
            ASSERT_NE(body_end, std::string::npos) << doc;
            std::string shown = text.substr(body_start, body_end - body_start);
            const fs::path source = root / (*it)[1].str();
            std::string compiled = tagged_region(read_file(source), (*it)[2].str(),
                                                 source.extension() == ".py");
            EXPECT_EQ(shown, compiled) << doc << " shows a snippet that differs from " << (*it)[1];
            ++checked;
        }
    }
    EXPECT_GE(checked, 1);
}
