// llama_generate: the llama2.c tokenizer (a SentencePiece BPE vocabulary exported to a flat file).
//
// File format (little-endian), for a vocabulary of vocab_size entries given by the model config:
//   i32 max_token_length
//   vocab_size times:  f32 merge score | i32 length | length bytes of UTF-8 (not terminated)
// Token 1 is BOS, 2 is EOS; tokens 3..258 are the raw bytes 0x00..0xFF, spelled "<0xXX>".
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>
#include <filesystem>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "floatzip/detail/file_io.hpp"
#include "floatzip/error.hpp"

namespace llama {

inline constexpr int kBosToken = 1;
inline constexpr int kEosToken = 2;
inline constexpr int kFirstByteToken = 3;  // "<0x00>"

class tokenizer {
 public:
  // Parses a tokenizer file's bytes. `where` names the file in error messages.
  static floatzip::result<tokenizer> parse(std::span<const std::byte> bytes, int vocab_size,
                                           std::string_view where) {
    using floatzip::errc;
    const std::string file(where);
    tokenizer t;
    std::size_t cursor = 0;
    const auto read_i32 = [&](std::int32_t& out) {
      if (bytes.size() - cursor < 4) return false;
      std::memcpy(&out, bytes.data() + cursor, 4);
      cursor += 4;
      return true;
    };
    std::int32_t max_token_length = 0;
    if (!read_i32(max_token_length) || max_token_length < 1 || max_token_length > (1 << 16))
      return floatzip::error{errc::bad_data, file +
                                                 ": field 'max_token_length' is missing or "
                                                 "outside [1, 65536]"};
    t.pieces_.resize(std::size_t(vocab_size));
    t.scores_.resize(std::size_t(vocab_size));
    for (int id = 0; id < vocab_size; ++id) {
      std::int32_t length = 0;
      float score = 0;
      if (bytes.size() - cursor < 4)
        return floatzip::error{errc::truncated, file + ": token " + std::to_string(id) +
                                                    ": field 'score' is past the end of the file"};
      std::memcpy(&score, bytes.data() + cursor, 4);
      cursor += 4;
      if (!read_i32(length))
        return floatzip::error{errc::truncated, file + ": token " + std::to_string(id) +
                                                    ": field 'length' is past the end of the file"};
      if (length < 0 || length > max_token_length)
        return floatzip::error{errc::bad_data, file + ": token " + std::to_string(id) +
                                                   ": field 'length' (" + std::to_string(length) +
                                                   ") is outside [0, max_token_length]"};
      if (bytes.size() - cursor < std::size_t(length))
        return floatzip::error{errc::truncated, file + ": token " + std::to_string(id) +
                                                    ": its bytes are past the end of the file"};
      t.pieces_[std::size_t(id)].assign(reinterpret_cast<const char*>(bytes.data() + cursor),
                                        std::size_t(length));
      t.scores_[std::size_t(id)] = score;
      cursor += std::size_t(length);
    }
    // Lookup from piece to id. On duplicates the lowest id wins.
    for (int id = vocab_size - 1; id >= 0; --id) t.ids_[t.pieces_[std::size_t(id)]] = id;
    return t;
  }

  static floatzip::result<tokenizer> load(const std::filesystem::path& path, int vocab_size) {
    auto file = floatzip::detail::mapped_file::open(path);
    if (!file) return file.error();
    return parse(file->bytes(), vocab_size, path.string());
  }

  [[nodiscard]] int vocab_size() const noexcept { return static_cast<int>(pieces_.size()); }

  // llama2.c's encoding: BOS, then a dummy-prefix space, one token per UTF-8 character (or one
  // byte token per byte when the character is not in the vocabulary), then BPE merges, always
  // merging the adjacent pair whose merged piece has the highest score.
  [[nodiscard]] std::vector<int> encode(std::string_view text, bool add_bos = true) const {
    std::vector<int> tokens;
    if (add_bos) tokens.push_back(kBosToken);
    std::vector<int> pieces;
    if (!text.empty()) {
      if (const int space = lookup(" "); space >= 0) pieces.push_back(space);
    }
    for (std::size_t i = 0; i < text.size();) {
      // A UTF-8 character is a lead byte and its continuation bytes (10xxxxxx), at most 4.
      std::size_t end = i + 1;
      while (end < text.size() && end - i < 4 &&
             (static_cast<unsigned char>(text[end]) & 0xC0) == 0x80)
        ++end;
      const std::string_view character = text.substr(i, end - i);
      if (const int id = lookup(character); id >= 0) {
        pieces.push_back(id);
      } else {
        for (char c : character) {
          const int byte_token = kFirstByteToken + static_cast<unsigned char>(c);
          if (byte_token < vocab_size()) pieces.push_back(byte_token);
        }
      }
      i = end;
    }
    std::string merged;
    while (pieces.size() > 1) {
      float best_score = -1e10f;
      int best_id = -1;
      std::size_t best_index = 0;
      for (std::size_t i = 0; i + 1 < pieces.size(); ++i) {
        merged = piece(pieces[i]);
        merged += piece(pieces[i + 1]);
        const int id = lookup(merged);
        if (id >= 0 && scores_[std::size_t(id)] > best_score) {
          best_score = scores_[std::size_t(id)];
          best_id = id;
          best_index = i;
        }
      }
      if (best_id < 0) break;
      pieces[best_index] = best_id;
      pieces.erase(pieces.begin() + static_cast<std::ptrdiff_t>(best_index) + 1);
    }
    tokens.insert(tokens.end(), pieces.begin(), pieces.end());
    return tokens;
  }

  // The text of `token` following `previous`, as llama2.c prints it: the leading space of the
  // first piece after BOS is dropped, and "<0xXX>" pieces are the byte they name.
  [[nodiscard]] std::string decode(int previous, int token) const {
    if (token < 0 || token >= vocab_size()) return {};
    std::string_view text = piece(token);
    if (previous == kBosToken && !text.empty() && text.front() == ' ') text.remove_prefix(1);
    unsigned byte = 0;
    if (text.size() == 6 && text.starts_with("<0x") && text.back() == '>' &&
        parse_hex_byte(text.substr(3, 2), byte))
      return std::string(1, static_cast<char>(byte));
    return std::string(text);
  }

  [[nodiscard]] std::string_view piece(int token) const {
    return pieces_[static_cast<std::size_t>(token)];
  }

 private:
  [[nodiscard]] int lookup(std::string_view text) const {
    const auto it = ids_.find(std::string(text));
    return it == ids_.end() ? -1 : it->second;
  }

  static bool parse_hex_byte(std::string_view digits, unsigned& out) {
    out = 0;
    for (char c : digits) {
      out <<= 4;
      if (c >= '0' && c <= '9')
        out |= unsigned(c - '0');
      else if (c >= 'A' && c <= 'F')
        out |= unsigned(c - 'A' + 10);
      else if (c >= 'a' && c <= 'f')
        out |= unsigned(c - 'a' + 10);
      else
        return false;
    }
    return true;
  }

  std::vector<std::string> pieces_;
  std::vector<float> scores_;
  std::unordered_map<std::string, int> ids_;
};

}  // namespace llama
