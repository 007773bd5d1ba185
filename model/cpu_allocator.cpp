#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>

namespace {
std::atomic<int64_t> g_current{0};
std::atomic<int64_t> g_peak{0};
std::atomic<int64_t> g_cap{-1};
constexpr size_t kHeader = 64;

void counted_free(void* ptr) {
  if (ptr == nullptr) return;
  char* raw = static_cast<char*>(ptr) - kHeader;
  g_current.fetch_sub(*reinterpret_cast<int64_t*>(raw), std::memory_order_relaxed);
  c10::free_cpu(raw);
}

struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    const int64_t size = static_cast<int64_t>(n);
    const int64_t now = g_current.fetch_add(size, std::memory_order_relaxed) + size;
    const int64_t cap = g_cap.load(std::memory_order_relaxed);
    if (cap >= 0 && now > cap) {
      g_current.fetch_sub(size, std::memory_order_relaxed);
      TORCH_CHECK_WITH(OutOfMemoryError, false, "CPU allocation of ", n,
                       " bytes would hold ", now, " bytes of tensors, over the cap of ",
                       cap, " bytes (model.memory)");
    }
    int64_t peak = g_peak.load(std::memory_order_relaxed);
    while (now > peak && !g_peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    char* raw = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    *reinterpret_cast<int64_t*>(raw) = size;
    void* data = raw + kHeader;
    return {data, data, &counted_free, c10::Device(c10::DeviceType::CPU)};
  }
  c10::DeleterFnPtr raw_deleter() const override { return &counted_free; }
  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }
};

CountingAllocator g_allocator;
}  // namespace

extern "C" {
int sml_install() {
  c10::SetCPUAllocator(&g_allocator, /*priority=*/100);
  return c10::GetCPUAllocator() == &g_allocator ? 1 : 0;
}
int64_t sml_current() { return g_current.load(); }
int64_t sml_peak() { return g_peak.load(); }
void sml_reset_peak() { g_peak.store(g_current.load()); }
void sml_set_cap(int64_t cap) { g_cap.store(cap); }
}
