// A counting CPU allocator for PyTorch: c10's own alloc_cpu/free_cpu underneath,
// with the bytes in use, their peak and an optional cap kept per thread.
//
// Every allocation is charged to the thread that makes it (a header before the data
// names its size and that thread's counters), and freed from them whichever thread
// frees it. The figures a thread reads (sml_current, sml_peak) and the cap it sets
// (sml_set_cap) are its own, so steps measured at once in several threads do not
// disturb one another. Counters are never freed (a thread that ends leaves a few
// bytes): memory it allocated may be freed later, by another thread.
#include <c10/core/Allocator.h>
#include <c10/core/CPUAllocator.h>
#include <c10/core/impl/alloc_cpu.h>
#include <c10/util/Exception.h>

#include <atomic>
#include <cstdint>

namespace {
struct Counters {
  std::atomic<int64_t> current{0};
  std::atomic<int64_t> peak{0};
  std::atomic<int64_t> cap{-1};
};

Counters* mine() {
  thread_local Counters* counters = new Counters();  // never freed: see above
  return counters;
}

struct Header {
  int64_t size;
  Counters* owner;
};
constexpr size_t kHeader = 64;  // keeps the data aligned as alloc_cpu aligns
static_assert(sizeof(Header) <= kHeader, "header too large");

void counted_free(void* ptr) {
  if (ptr == nullptr) return;
  char* raw = static_cast<char*>(ptr) - kHeader;
  const Header* h = reinterpret_cast<const Header*>(raw);
  h->owner->current.fetch_sub(h->size, std::memory_order_relaxed);
  c10::free_cpu(raw);
}

struct CountingAllocator final : c10::Allocator {
  c10::DataPtr allocate(size_t n) override {
    Counters* c = mine();
    const int64_t size = static_cast<int64_t>(n);
    const int64_t now = c->current.fetch_add(size, std::memory_order_relaxed) + size;
    const int64_t cap = c->cap.load(std::memory_order_relaxed);
    if (cap >= 0 && now > cap) {
      c->current.fetch_sub(size, std::memory_order_relaxed);
      TORCH_CHECK_WITH(OutOfMemoryError, false, "CPU allocation of ", n,
                       " bytes would hold ", now, " bytes of tensors in this thread, over ",
                       "the cap of ", cap, " bytes (model.memory)");
    }
    int64_t peak = c->peak.load(std::memory_order_relaxed);
    while (now > peak &&
           !c->peak.compare_exchange_weak(peak, now, std::memory_order_relaxed)) {
    }
    char* raw = static_cast<char*>(c10::alloc_cpu(n + kHeader));
    Header* h = reinterpret_cast<Header*>(raw);
    h->size = size;
    h->owner = c;
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
int64_t sml_current() { return mine()->current.load(); }
int64_t sml_peak() { return mine()->peak.load(); }
void sml_reset_peak() {
  Counters* c = mine();
  c->peak.store(c->current.load());
}
void sml_set_cap(int64_t cap) { mine()->cap.store(cap); }
}
