// Checksums of the artifact protocol (worker.proto, ArtifactChunk): CRC-32C
// (Castagnoli) per chunk and SHA-256 (hex) of the whole artifact. Plain
// C++ over bytes, no protos: workers link it too.
#ifndef LAYERFLOW_COMMON_CHECKSUM_H_
#define LAYERFLOW_COMMON_CHECKSUM_H_

#include <cstdint>
#include <memory>
#include <string>

#include "absl/strings/string_view.h"

namespace layerflow::artifacts {

// CRC-32C of `data`, continuing from `crc` (0 to start): Crc32c("123456789")
// is 0xE3069283. Table-driven (this Debian's abseil predates absl/crc).
uint32_t Crc32c(absl::string_view data, uint32_t crc = 0);

// Incremental SHA-256 (OpenSSL libcrypto).
class Sha256 {
 public:
  Sha256();
  ~Sha256();
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(absl::string_view data);
  // Lowercase hex of the digest (64 characters). Call once.
  std::string HexDigest();

 private:
  struct Impl;
  std::unique_ptr<Impl> impl_;
};

// One-shot SHA-256, lowercase hex.
std::string Sha256Hex(absl::string_view data);

}  // namespace layerflow::artifacts

#endif  // LAYERFLOW_COMMON_CHECKSUM_H_
