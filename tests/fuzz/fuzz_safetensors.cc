// A safetensors file (worker/model/checkpoint.h, SafetensorsFile): the bytes
// go into a memory file that is opened as a path, as the worker maps a
// checkpoint. Invariants of a file that opens: each tensor's bytes are
// numel * dtype size, lie inside the file (touched here, so a range past the
// mapping faults), and Find returns every listed tensor.
#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

#include "worker/model/checkpoint.h"

namespace {

int MemoryFile() {
  static const int fd = memfd_create("fuzz.safetensors", MFD_CLOEXEC);
  if (fd < 0) {
    std::perror("memfd_create");
    std::abort();
  }
  return fd;
}

[[noreturn]] void Violated(const std::string& what) {
  std::fprintf(stderr, "invariant violated: %s\n", what.c_str());
  std::abort();
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  const int fd = MemoryFile();
  if (ftruncate(fd, 0) != 0 || pwrite(fd, data, size, 0) != static_cast<ssize_t>(size)) {
    std::perror("memfd write");
    std::abort();
  }
  auto file = layerflow::worker::SafetensorsFile::Open("/proc/self/fd/" + std::to_string(fd));
  if (!file.ok()) return 0;
  size_t total = 0;
  for (const layerflow::worker::SafetensorsTensor& t : (*file)->tensors()) {
    const size_t element = layerflow::worker::SafetensorsDtypeSize(t.dtype);
    if (static_cast<size_t>(t.numel()) * element != t.nbytes) {
      Violated(t.name + ": nbytes != numel * dtype size");
    }
    if (t.nbytes > size) Violated(t.name + ": more bytes than the file");
    total += t.nbytes;
    volatile uint8_t sink = 0;
    for (size_t i = 0; i < t.nbytes; ++i) sink = sink ^ t.data[i];
    (void)sink;
    if ((*file)->Find(t.name) != &t) Violated(t.name + ": Find does not return it");
  }
  if (total > size) Violated("tensors take more bytes than the file");
  return 0;
}
