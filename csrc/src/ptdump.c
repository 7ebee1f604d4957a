/*
 * s2pt_dump(): a VM's stage-2 tables as text, in the layout of KVM's per-VM debugfs file
 * "stage2_page_tables" (arch/arm64/kvm/ptdump.c, which drives the arm64 ptdump printer of
 * arch/arm64/mm/ptdump.c over the KVM page-table walker). Written from a description of that
 * format, not from its source.
 *
 * Format followed: current mainline Linux (2026, the 7.x series). The facts used:
 *  - The text starts with one marker line, "---[ Guest IPA ]---". Nothing closes it.
 *  - The walk covers [0, 2^ipa_bits) and visits every entry that is not a table: valid
 *    leaves and invalid entries alike, each at the level where the walk finds it.
 *  - Adjacent entries coalesce into one line while their level and their "prot" stay the
 *    same. prot is the descriptor masked to the bits the attribute columns read: valid
 *    (bit 0), type (bits 1:0), S2AP R/W (bits 6, 7), AF (bit 10), XN[1:0] (bits 54:53).
 *    The output address, MemAttr (with or without FWB), SH (OA[51:50] with LPA2), the 52-bit
 *    address bits and the software bits are not part of it, so leaves that differ only
 *    there share a line, and nothing on a line says where the IPAs map to.
 *  - A line is "0x%016x-0x%016x" (start, exclusive end), three spaces, the size right-aligned
 *    in 9 columns followed by its unit, a space and the level as a decimal digit. The size is
 *    end - start in KiB, divided by 1024 while it stays a multiple of 1024, one unit step
 *    each time, through K M G T P E.
 *  - A line whose prot is 0 (never-written entries) ends there. Otherwise six columns follow,
 *    each after one space: " " for a valid entry or "F" for an invalid one, "R" or " ",
 *    "W" or " ", the XN[1:0] pair ("px ux " 00, "PXNux " 01, "PXNUXN" 10, "px UXN" 11),
 *    "AF" or two spaces, and "BLK" when bits 1:0 are 0b01 (a block) or three spaces.
 *  - After the walk the last run is printed too, ending at 2^ipa_bits.
 *
 * Where earlier kernels differ (not followed here): from 6.11 until FEAT_XNX support reached
 * the dump (to our reading, 6.19) a single "X" column derived from XN[1] stood where the XN
 * pair is (its polarity differs between trees), and R, W and AF showed on valid entries only;
 * and until a later fix, nothing flushed the last run after the walk, so the run that ends at
 * the top of the IPA space was never printed. Unsure: the exact releases of both changes.
 * This file prints the last run, ending at 2^ipa_bits, with no closing marker, as the
 * flushing version does. KVM refuses to dump a table that starts at level -1; s2pt never
 * builds one (52-bit 4K uses 16 concatenated level-0 tables), so every level prints as 0..3.
 *
 * Owner annotations (s2pt_set_owner(), bits 9:2 of an invalid entry) show only through the
 * bits of the mask they overlap (bits 6 and 7), as they would in KVM's dump: "F" with R and/or
 * W, or nothing at all, which coalesces with the empty entries around it.
 */
#include "internal.h"

/* Descriptor bits the attribute columns read; entries coalesce while these agree. */
#define DUMP_PROT_MASK                                                                     \
	(S2PT_PTE_VALID | S2PT_PTE_TYPE_MASK | S2PT_PTE_S2AP_R | S2PT_PTE_S2AP_W | S2PT_PTE_AF | \
	 S2PT_PTE_XN_MASK)

/* The longest line: 2 + 16 + 3 + 16 + 3, a count of at most 13 digits and its unit, 2 for the
 * level, 20 columns of attributes, the newline. */
#define DUMP_LINE_MAX 96

struct dump {
	char *buf;
	size_t len;
	size_t pos; /* bytes of the whole text so far, whether or not they fitted */
	int started;
	uint64_t run_start;
	uint64_t run_prot;
	int run_level;
};

/* Append @n bytes; what does not fit before the last byte of @buf is only counted. */
static void put(struct dump *d, const char *s, size_t n)
{
	if (d->len && d->pos < d->len - 1) {
		size_t room = d->len - 1 - d->pos;

		memcpy(d->buf + d->pos, s, n < room ? n : room);
	}
	d->pos += n;
}

static const char *xn_column(uint64_t prot)
{
	switch ((prot & S2PT_PTE_XN_MASK) >> 53) {
	case 0:
		return "px ux "; /* executable at EL1 and EL0 */
	case 1:
		return "PXNux "; /* EL0 only */
	case 2:
		return "PXNUXN"; /* neither */
	default:
		return "px UXN"; /* EL1 only */
	}
}

static char *put_hex16(char *p, uint64_t v)
{
	static const char digits[] = "0123456789abcdef";

	for (int i = 15; i >= 0; i--, v >>= 4)
		p[i] = digits[v & 0xf];
	return p + 16;
}

static char *put_str(char *p, const char *s)
{
	while (*s)
		*p++ = *s++;
	return p;
}

/* Print the run [run_start, end). Formatted by hand: snprintf() costs more than the walk. */
static void flush_run(struct dump *d, uint64_t end)
{
	static const char units[] = "KMGTPE";
	char line[DUMP_LINE_MAX], digits[20];
	uint64_t size = (end - d->run_start) >> 10;
	uint64_t p = d->run_prot;
	const char *unit = units;
	char *o = line;
	int nd = 0;

	while (size % 1024 == 0 && unit[1]) {
		size /= 1024;
		unit++;
	}
	do {
		digits[nd++] = (char)('0' + size % 10);
		size /= 10;
	} while (size);
	*o++ = '0';
	*o++ = 'x';
	o = put_hex16(o, d->run_start);
	o = put_str(o, "-0x");
	o = put_hex16(o, end);
	o = put_str(o, "   ");
	for (int i = nd; i < 9; i++) /* the count right-aligned in 9 columns */
		*o++ = ' ';
	while (nd)
		*o++ = digits[--nd];
	*o++ = *unit;
	*o++ = ' ';
	S2PT_ASSERT(d->run_level >= 0 && d->run_level <= 3);
	*o++ = (char)('0' + d->run_level);
	if (p) {
		o = put_str(o, (p & S2PT_PTE_VALID) ? "  " : " F");
		o = put_str(o, (p & S2PT_PTE_S2AP_R) ? " R" : "  ");
		o = put_str(o, (p & S2PT_PTE_S2AP_W) ? " W " : "   ");
		o = put_str(o, xn_column(p));
		o = put_str(o, (p & S2PT_PTE_AF) ? " AF" : "   ");
		o = put_str(o, (p & S2PT_PTE_TYPE_MASK) == S2PT_PTE_TYPE_BLOCK ? " BLK" : "    ");
	}
	*o++ = '\n';
	S2PT_ASSERT(o - line <= DUMP_LINE_MAX);
	put(d, line, (size_t)(o - line));
}

/* One non-table entry at @addr: extend the current run or close it and start another. */
static void note(struct dump *d, uint64_t addr, int level, uint64_t pte)
{
	uint64_t prot = pte & DUMP_PROT_MASK;

	if (!d->started) {
		static const char marker[] = "---[ Guest IPA ]---\n";

		put(d, marker, sizeof(marker) - 1);
		d->started = 1;
	} else if (prot != d->run_prot || level != d->run_level) {
		flush_run(d, addr);
	} else {
		return;
	}
	d->run_start = addr;
	d->run_prot = prot;
	d->run_level = level;
}

static int dump_cb(const struct s2pt_walk_ctx *ctx, uint32_t visit)
{
	struct dump *d = ctx->arg;

	if (visit == S2PT_WALK_LEAF) {
		note(d, ctx->addr, ctx->level, ctx->old);
	} else {
		/* A run of non-table entries of one table; it reads them itself. */
		uint64_t span = s2pt__span(&ctx->pt->cfg, ctx->level);

		for (uint32_t i = 0; i < ctx->nr; i++)
			note(d, ctx->addr + i * span, ctx->level, ctx->ptep[i]);
	}
	return 0;
}

int s2pt_dump(const struct s2pt_pgtable *pt, char *buf, size_t len, size_t *needed)
{
	struct dump d = {.buf = buf, .len = len};
	const struct s2pt_walker w = {
		.cb = dump_cb,
		.arg = &d,
		.flags = S2PT_WALK_LEAF | S2PT_WALK_LEAF_RUN,
	};
	uint64_t top;
	int ret;

	if (!needed || (!buf && len))
		return S2PT_EINVAL;
	*needed = 0;
	if (len)
		buf[0] = '\0';
	if (pt->destroyed)
		return S2PT_EDESTROYED;
	top = 1ull << pt->cfg.ipa_bits;
	/* The walker takes a mutable table; these visits only read. */
	ret = s2pt_walk((struct s2pt_pgtable *)pt, 0, top, &w);
	if (ret)
		return ret;
	if (d.started)
		flush_run(&d, top);
	if (len)
		buf[d.pos < len ? d.pos : len - 1] = '\0';
	*needed = d.pos;
	return 0;
}
