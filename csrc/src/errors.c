#include "internal.h"

const char *s2pt_strerror(int err)
{
	switch (err) {
	case S2PT_OK:
		return "success";
	case S2PT_EINVAL:
		return "invalid argument";
	case S2PT_EALIGN:
		return "address or size not aligned to the granule";
	case S2PT_ERANGE:
		return "address out of range";
	case S2PT_ENOMEM:
		return "table page pool exhausted";
	case S2PT_ECONFIG:
		return "invalid stage-2 configuration";
	case S2PT_EFAULT:
		return "stage-2 fault";
	case S2PT_EINVARIANT:
		return "page-table invariant violated";
	case S2PT_EDESTROYED:
		return "page table destroyed";
	case S2PT_EBUSY:
		return "pool still in use";
	default:
		return "unknown error";
	}
}

int s2pt_debug_build(void)
{
	return S2PT_DEBUG;
}
