# Cython-level API: other Cython modules can `cimport s2pt._core` and call the C core on a
# Stage2's tables directly (e.g. `s2pt_translate(&vm.pt, ...)` in a simulator's inner loop).
from libc.stdint cimport uint32_t, uint64_t

from cpython.pythread cimport PyThread_type_lock

from s2pt._cs2pt cimport s2pt_config, s2pt_memslot, s2pt_mmu, s2pt_pgtable, s2pt_pool, s2pt_tlbi, s2pt_tlbi_log


cdef class Translation:
    # pa, level, af, pte, sw read as they are; size, prot and memattr map to shared objects
    cdef readonly uint64_t pa
    cdef readonly uint64_t pte
    cdef readonly uint32_t sw
    cdef readonly int level
    cdef readonly bint af
    cdef uint64_t _size
    cdef uint32_t _prot
    cdef uint32_t _memattr
    cdef tuple _tuple(self)


cdef class Stage2Config:
    cdef s2pt_config cfg


cdef class PagePool:
    cdef s2pt_pool pool
    cdef void *mem
    cdef size_t mem_bytes
    cdef void *meta
    cdef size_t meta_bytes
    # from_buffer(): the caller's memory, held through this export (never freed or reused)
    cdef object buffer
    # Serialises the GIL-free calls of the VMs in this pool; ``busy`` (changed only with the
    # GIL held) counts the threads in or entering one, so GIL-holding calls wait only then.
    cdef PyThread_type_lock lock
    cdef int busy
    cdef _release(self)
    cdef _discard(self)
    cdef int _ready(self) except -1
    cdef int _wait(self) except -1


cdef class Stage2:
    cdef s2pt_pgtable pt
    cdef s2pt_tlbi_log log
    cdef s2pt_tlbi *events
    cdef s2pt_mmu mmu
    cdef readonly PagePool pool
    cdef readonly Stage2Config config
    cdef _setup(self, Stage2Config config, object pool, object tlbi_capacity)
    cdef int _sync(self) except -1
    cdef PyThread_type_lock _go(self) except NULL
    cdef void _back(self) noexcept
    cdef const s2pt_memslot *_slot(self, object slot) except NULL
    cdef const s2pt_memslot *_logging(self, object slot) except NULL
    cdef int _live(self) except -1
    cdef int _fail(self, int rc, uint64_t ipa, uint64_t size, object pa=*, object prot=*,
                   object memattr=*) except -1
    cdef int _fail_at(self, int rc, size_t index, uint64_t ipa, uint64_t size, object pa=*,
                      object prot=*, object memattr=*) except -1
    cdef tuple _leaf_chunk(self, uint64_t start, uint64_t end)


cdef class Stage1:
    cdef s2pt_pgtable pt
    cdef readonly PagePool pool
    cdef uint64_t mair_value
    cdef uint64_t va_base
    cdef s2pt_tlbi_log log
    cdef s2pt_tlbi *events
    cdef uint64_t _in(self, object va) except? 0
    cdef int _sync(self) except -1
    cdef int _live(self) except -1
    cdef int _fail(self, int rc, uint64_t va, uint64_t size, object ipa=*, object prot=*,
                   object attr=*) except -1



cdef class Regime:
    cdef readonly object ttbr0
    cdef readonly object ttbr1
    cdef uint64_t mair_value
