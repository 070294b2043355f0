// Compares two PNGs within a tolerance (the results page's screenshot
// against the stored one), or checks that one decodes:
//   png_diff ACTUAL REFERENCE [CHANNEL_TOLERANCE [MAX_FRACTION]]
//   png_diff --info FILE          # prints WIDTHxHEIGHT
// A pixel differs when any of its channels differs by more than
// CHANNEL_TOLERANCE (0-255, default 48: antialiasing shifts stay below);
// the images match when they have the same size and at most MAX_FRACTION
// (default 0.02) of their pixels differ. Exit 0 on a match, 1 otherwise.
// cairo decodes the PNGs: the library `layerflow plot` draws with.
#include <cairo.h>

#include <algorithm>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <string>

namespace {

cairo_surface_t* Load(const char* path) {
  cairo_surface_t* s = cairo_image_surface_create_from_png(path);
  if (cairo_surface_status(s) != CAIRO_STATUS_SUCCESS) {
    std::fprintf(stderr, "png_diff: cannot decode %s: %s\n", path,
                 cairo_status_to_string(cairo_surface_status(s)));
    cairo_surface_destroy(s);
    return nullptr;
  }
  return s;
}

// The pixel as 8-bit channels of the same format whatever the file's.
cairo_surface_t* AsArgb(cairo_surface_t* s) {
  const int w = cairo_image_surface_get_width(s), h = cairo_image_surface_get_height(s);
  cairo_surface_t* out = cairo_image_surface_create(CAIRO_FORMAT_ARGB32, w, h);
  cairo_t* cr = cairo_create(out);
  cairo_set_source_rgb(cr, 1, 1, 1);  // transparency over white
  cairo_paint(cr);
  cairo_set_source_surface(cr, s, 0, 0);
  cairo_paint(cr);
  cairo_destroy(cr);
  cairo_surface_flush(out);
  return out;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 3 && std::string(argv[1]) == "--info") {
    cairo_surface_t* s = Load(argv[2]);
    if (s == nullptr) return 1;
    std::printf("%dx%d\n", cairo_image_surface_get_width(s), cairo_image_surface_get_height(s));
    cairo_surface_destroy(s);
    return 0;
  }
  if (argc < 3 || argc > 5) {
    std::fprintf(stderr,
                 "usage: png_diff ACTUAL REFERENCE [CHANNEL_TOLERANCE [MAX_FRACTION]]\n"
                 "       png_diff --info FILE\n");
    return 2;
  }
  const int tolerance = argc > 3 ? std::atoi(argv[3]) : 48;
  const double max_fraction = argc > 4 ? std::atof(argv[4]) : 0.02;
  cairo_surface_t* a = Load(argv[1]);
  cairo_surface_t* b = Load(argv[2]);
  if (a == nullptr || b == nullptr) return 1;
  const int w = cairo_image_surface_get_width(a), h = cairo_image_surface_get_height(a);
  if (w != cairo_image_surface_get_width(b) || h != cairo_image_surface_get_height(b)) {
    std::printf("png_diff: sizes differ: %dx%d vs %dx%d\n", w, h, cairo_image_surface_get_width(b),
                cairo_image_surface_get_height(b));
    return 1;
  }
  cairo_surface_t* pa = AsArgb(a);
  cairo_surface_t* pb = AsArgb(b);
  const int stride = cairo_image_surface_get_stride(pa);
  const unsigned char* da = cairo_image_surface_get_data(pa);
  const unsigned char* db = cairo_image_surface_get_data(pb);
  int64_t differing = 0;
  int max_delta = 0;
  for (int y = 0; y < h; ++y) {
    const auto* ra = reinterpret_cast<const uint32_t*>(da + y * stride);
    const auto* rb = reinterpret_cast<const uint32_t*>(db + y * stride);
    for (int x = 0; x < w; ++x) {
      int delta = 0;
      for (int shift = 0; shift < 32; shift += 8) {
        const int ca = (ra[x] >> shift) & 0xFF, cb = (rb[x] >> shift) & 0xFF;
        delta = std::max(delta, std::abs(ca - cb));
      }
      max_delta = std::max(max_delta, delta);
      if (delta > tolerance) ++differing;
    }
  }
  const double fraction = static_cast<double>(differing) / (static_cast<double>(w) * h);
  std::printf(
      "png_diff: %dx%d, %lld pixels (%.3f%%) differ by more than %d (largest %d); "
      "allowed %.3f%%\n",
      w, h, static_cast<long long>(differing), 100 * fraction, tolerance, max_delta,
      100 * max_fraction);
  cairo_surface_destroy(pa);
  cairo_surface_destroy(pb);
  cairo_surface_destroy(a);
  cairo_surface_destroy(b);
  return fraction <= max_fraction ? 0 : 1;
}
