// floatzip internals: the data section of decompress_file, decoded and written in a pipeline.
//
// Why: decoding a bundle, checking its decoded checksum and copying it into the page cache
// (pwrite) are three passes over the same bytes. Done one after the other on one thread the
// output's hash pass and the write run while no decoding does. Here the calling thread decodes
// bundle b + 1 (with the codec threads asked for) while a writer thread hashes and writes bundle b:
// it hashes a slice of the decoded values and writes that same slice at once, while it is still
// in its cache, so the decoded bytes are read once more in all, not twice, and the page cache is
// written once (the file is sized up front and every byte of the data section is written at its
// final offset exactly once). Two bundle-sized value buffers alternate between the two threads
// and are reused for every bundle, so memory stays at twice the largest bundle's values.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <optional>
#include <string>
#include <thread>
#include <vector>

namespace floatzip::detail {

inline constexpr std::size_t kWriteSliceBytes = std::size_t{1} << 18;  // fits L2 with room
inline constexpr std::uint32_t kVerifyAhead = 2;  // bundles whose checksums the writer checks ahead

// For each bundle, the gap it stores (meaningful only for the raw bundles of gaps).
inline std::vector<std::uint32_t> gap_bundle_map(const container_reader& reader) {
  std::vector<std::uint32_t> gap_of_bundle(reader.bundles().size(), 0);
  for (std::uint32_t g = 0; g < reader.gaps().size(); ++g)
    gap_of_bundle[reader.gaps()[g].bundle] = g;
  return gap_of_bundle;
}

// Writes every bundle of `reader` to `out`, the data section starting at data_start. With
// check_decoded, each coded bundle's output is checked against its decoded checksum before the
// caller may commit: a mismatch is an error, and the caller discards the file.
inline error write_decoded_data(const container_reader& reader, atomic_output_file& out,
                                std::uint64_t data_start, const decompress_options& options,
                                bool check_decoded) {
  const auto bundles = reader.bundles();
  const std::vector<std::uint32_t> gap_of_bundle = gap_bundle_map(reader);

  // One job for the writer: bundle b's bytes, decoded into buffers[buffer] or raw in the mapping.
  struct job {
    std::uint32_t bundle = 0;
    int buffer = -1;  // -1: a raw bundle
    std::span<const std::byte> raw;
  };
  std::vector<std::byte> buffers[2];
  std::mutex mutex;
  std::condition_variable changed;
  std::optional<job> pending;  // handed to the writer, not yet taken
  bool buffer_busy[2] = {};    // owned by the writer until it has written it
  bool finished = false;       // no more jobs
  error writer_error;          // the writer's first error; it stops at it
  bool writer_failed = false;

  auto write_job = [&](const job& j) -> error {
    if (j.buffer < 0) {
      const auto members = reader.bundle_tensors(j.bundle);
      const safetensors::byte_range r = members.empty()
                                            ? reader.gaps()[gap_of_bundle[j.bundle]].original
                                            : reader.tensors()[members[0]].original;
      error e = out.write_at(data_start + r.begin, j.raw);
      reader.release_bundle(j.bundle);
      return e;
    }
    const auto& rec = bundles[j.bundle];
    const auto block = std::span<const std::byte>(buffers[j.buffer])
                           .first(static_cast<std::size_t>(rec.decoded_bytes));
    const std::uint64_t width = value_bytes(rec.format);
    // Slices of the bundle in bundle order: hashed, then written while still in cache. The
    // tensors tile the block in bundle order (bundle_offset), each going to its own offset.
    xxh3_stream hash;
    const auto members = reader.bundle_tensors(j.bundle);
    std::size_t m = 0;
    for (std::size_t at = 0; at < block.size(); at += kWriteSliceBytes) {
      const auto slice = block.subspan(at, std::min(kWriteSliceBytes, block.size() - at));
      if (check_decoded) hash.update(slice);
      std::size_t done = at;
      while (done < at + slice.size() && m < members.size()) {
        const auto& t = reader.tensors()[members[m]];
        // The part of the tensor this bundle holds (all of it unless the tensor was split).
        const auto piece = reader.tensor_piece(j.bundle, t);
        const std::uint64_t begin = t.bundle_offset * width;
        const std::uint64_t end = begin + width * piece.values;
        if (end <= done) {
          ++m;
          continue;
        }
        const std::uint64_t from = std::max<std::uint64_t>(begin, done);
        const std::uint64_t to = std::min<std::uint64_t>(end, at + slice.size());
        if (from >= to) break;  // a hole in the tiling: not written (the tensors tile it)
        if (error e =
                out.write_at(data_start + t.original.begin + width * piece.first + (from - begin),
                             block.subspan(from, to - from)))
          return e;
        done = to;
        if (to == end) ++m;
      }
    }
    if (check_decoded && hash.digest() != rec.decoded_checksum)
      return {errc::checksum_mismatch, reader.name() + ": bundle " + std::to_string(j.bundle) +
                                           ": decoded values disagree with field "
                                           "'decoded_checksum'"};
    return {};
  };

  // While it has nothing to write, the writer checks ahead the stored checksums of the next
  // bundles the caller will decode (bundle_bytes remembers a verified bundle), which also faults
  // their mapped pages in and leaves their bytes in the shared cache for the decoder.
  std::uint32_t handed = 0;   // bundles handed over; the caller decodes bundle `handed` next
  std::uint32_t checked = 0;  // the writer has checked ahead every bundle below this
  const auto count = static_cast<std::uint32_t>(bundles.size());
  auto check_ahead_limit = [&] { return std::min(count, handed + 1 + kVerifyAhead); };
  std::thread writer([&] {
    for (;;) {
      job j;
      std::optional<std::uint32_t> check;
      {
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] {
          return pending.has_value() || finished ||
                 std::max(checked, handed + 1) < check_ahead_limit();
        });
        if (writer_failed) return;
        if (pending) {
          j = *pending;
          pending.reset();
        } else if (finished) {
          return;
        } else {
          checked = std::max(checked, handed + 1);
          check = checked++;
        }
      }
      if (check) {
        // An error is the caller's to report when it reaches the bundle.
        if (bundles[*check].kind == bundle_kind::huffman) (void)reader.bundle_bytes(*check);
        continue;
      }
      changed.notify_all();
      error e = write_job(j);
      std::lock_guard lock(mutex);
      if (j.buffer >= 0) buffer_busy[j.buffer] = false;
      if (e) {
        writer_error = std::move(e);
        writer_failed = true;
        finished = true;
      }
      changed.notify_all();
    }
  });
  // Hands a job over once the writer has taken the previous one; false once the writer failed.
  auto hand_over = [&](const job& j) {
    std::unique_lock lock(mutex);
    changed.wait(lock, [&] { return !pending.has_value() || writer_failed; });
    if (writer_failed) return false;
    pending = j;
    handed = j.bundle + 1;
    changed.notify_all();
    return true;
  };
  // Lets the writer finish what it was handed and joins it; on every way out, exceptions too.
  auto stop_writer = [&] {
    if (!writer.joinable()) return;
    {
      std::unique_lock lock(mutex);
      changed.wait(lock, [&] { return !pending.has_value() || writer_failed; });
      finished = true;
    }
    changed.notify_all();
    writer.join();
  };
  struct at_exit {
    decltype(stop_writer)& stop;
    ~at_exit() { stop(); }
  } stop_on_exit{stop_writer};

  const std::uint64_t data_size = reader.original_header().data_size;
  std::uint64_t done = 0;
  int next_buffer = 0;
  for (std::uint32_t b = 0; b < bundles.size(); ++b) {
    if (cancel_requested(options.cancel)) return {errc::cancelled, reader.name() + ": interrupted"};
    const auto& rec = bundles[b];
    job j{b, -1, {}};
    if (rec.kind == bundle_kind::raw) {
      auto bytes = reader.bundle_bytes(b);
      if (!bytes) return bytes.error();
      j.raw = *bytes;
    } else {
      {
        // Wait until the writer has finished with the buffer.
        std::unique_lock lock(mutex);
        changed.wait(lock, [&] { return !buffer_busy[next_buffer] || writer_failed; });
        if (writer_failed) break;
      }
      auto& values = buffers[next_buffer];
      // Grow only: the largest bundle bounds memory, and smaller ones reuse the buffer.
      if (values.size() < rec.decoded_bytes) values.resize(rec.decoded_bytes);
      const auto block = std::span<std::byte>(values).first(rec.decoded_bytes);
      if (error e = reader.decode_bundle(b, block, options.codec, /*check_decoded=*/false))
        return e;
      reader.release_bundle(b);
      {
        std::lock_guard lock(mutex);
        buffer_busy[next_buffer] = true;
      }
      j.buffer = next_buffer;
      next_buffer ^= 1;
    }
    if (!hand_over(j)) break;
    done += rec.decoded_bytes;
    if (options.progress) options.progress(done, data_size);
  }
  stop_writer();
  if (writer_error) return writer_error;
  return reader.check_unchanged();  // a file that shrank meanwhile read as zeros somewhere
}

}  // namespace floatzip::detail
