/*
 * s2pt_dump(): KVM's stage-2 ptdump text ("stage2_page_tables"). The expected texts are
 * written out by hand from the format's rules (csrc/src/ptdump.c header): a "---[ Guest
 * IPA ]---" line; "0x%016x-0x%016x", three spaces, the size in 9 columns plus its unit, the
 * level; for entries with attribute bits the F, R, W, XN pair, AF and BLK columns; runs of
 * one level with the same bits coalesce whatever their output addresses.
 */
#include <stdlib.h>
#include <string.h>

#include "s2pt_testlib.h"

#define RW (S2PT_PROT_R | S2PT_PROT_W)
#define NORMAL S2PT_MEMATTR_NORMAL

static const char hdr[] = "---[ Guest IPA ]---\n";

/* The whole dump in a malloc'ed buffer (NULL on error); checks the size query agrees. */
static char *dump_all(const struct s2pt_pgtable *pt)
{
	size_t needed = 0, again = 0;
	char *buf;

	if (s2pt_dump(pt, NULL, 0, &needed))
		return NULL;
	buf = malloc(needed + 1);
	if (!buf)
		return NULL;
	if (s2pt_dump(pt, buf, needed + 1, &again) || again != needed || strlen(buf) != needed) {
		free(buf);
		return NULL;
	}
	return buf;
}

static void check_text(const struct s2pt_pgtable *pt, const char *expect)
{
	char *got = dump_all(pt);

	REQUIRE(got != NULL);
	CHECK_MSG(strcmp(got, expect) == 0, "dump:\n%s\nexpected:\n%s", got, expect);
	free(got);
}

/*
 * 40-bit IPA, 4K: start level 1 over two concatenated root pages. Two 4K pages with
 * unrelated output addresses, a read-only page, a 1G executable block.
 */
static int setup_4k(struct fx *f)
{
	int r = fx_init(f, 40, 4096, 40, 64, 0x40000000ull);

	if (!r)
		r = s2pt_map(&f->pt, 0, GiB(2), KiB(4), RW, NORMAL, 0);
	if (!r)
		r = s2pt_map(&f->pt, KiB(4), GiB(3) + KiB(20), KiB(4), RW, S2PT_MEMATTR_NORMAL_NC, 0);
	if (!r)
		r = s2pt_map(&f->pt, KiB(12), GiB(2), KiB(4), S2PT_PROT_R, NORMAL, 0);
	if (!r)
		r = s2pt_map(&f->pt, GiB(1), GiB(4), GiB(1), S2PT_PROT_ALL, NORMAL, 0);
	return r;
}

static const char text_4k[] =
	"---[ Guest IPA ]---\n"
	"0x0000000000000000-0x0000000000002000           8K 3   R W PXNUXN AF    \n"
	"0x0000000000002000-0x0000000000003000           4K 3\n"
	"0x0000000000003000-0x0000000000004000           4K 3   R   PXNUXN AF    \n"
	"0x0000000000004000-0x0000000000200000        2032K 3\n"
	"0x0000000000200000-0x0000000040000000        1022M 2\n"
	"0x0000000040000000-0x0000000080000000           1G 1   R W px ux  AF BLK\n"
	"0x0000000080000000-0x0000010000000000        1022G 1\n";

TEST(ptdump_empty_table_is_one_run)
{
	struct fx f;

	/* The root's empty entries at level 1, both concatenated pages, as one line. */
	REQUIRE_EQ(fx_init(&f, 40, 4096, 40, 16, 0x40000000ull), 0);
	check_text(&f.pt, "---[ Guest IPA ]---\n"
			  "0x0000000000000000-0x0000010000000000           1T 1\n");
	fx_fini(&f);
	/* 32-bit IPA: start level 2, four concatenated root pages. */
	REQUIRE_EQ(fx_init(&f, 32, 4096, 40, 16, 0x40000000ull), 0);
	check_text(&f.pt, "---[ Guest IPA ]---\n"
			  "0x0000000000000000-0x0000000100000000           4G 2\n");
	fx_fini(&f);
}

TEST(ptdump_pages_blocks_holes)
{
	struct fx f;

	REQUIRE_EQ(setup_4k(&f), 0);
	check_text(&f.pt, text_4k);
	/* Unmapping everything gives back the empty text (the tables were freed). */
	REQUIRE_EQ(s2pt_unmap(&f.pt, 0, GiB(2), NULL), 0);
	check_text(&f.pt, "---[ Guest IPA ]---\n"
			  "0x0000000000000000-0x0000010000000000           1T 1\n");
	fx_fini(&f);
}

TEST(ptdump_af_and_second_root_page)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 40, 64, 0x40000000ull), 0);
	/* 2M blocks, the second without AF: AF is a column, so the run breaks. */
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(2), GiB(2), MiB(2), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, MiB(4), GiB(3), MiB(2), RW, NORMAL, S2PT_MAP_NO_AF), 0);
	/* 600G lies in the second page of the concatenated root (entries 512..1023). */
	REQUIRE_EQ(s2pt_map(&f.pt, GiB(600), GiB(2), GiB(1), RW, NORMAL, 0), 0);
	check_text(&f.pt, "---[ Guest IPA ]---\n"
			  "0x0000000000000000-0x0000000000200000           2M 2\n"
			  "0x0000000000200000-0x0000000000400000           2M 2   R W PXNUXN AF BLK\n"
			  "0x0000000000400000-0x0000000000600000           2M 2   R W PXNUXN    BLK\n"
			  "0x0000000000600000-0x0000000040000000        1018M 2\n"
			  "0x0000000040000000-0x0000009600000000         599G 1\n"
			  "0x0000009600000000-0x0000009640000000           1G 1   R W PXNUXN AF BLK\n"
			  "0x0000009640000000-0x0000010000000000         423G 1\n");
	fx_fini(&f);
}

TEST(ptdump_owner_annotations_show_through_the_mask)
{
	struct fx f;

	REQUIRE_EQ(fx_init(&f, 40, 4096, 40, 64, 0x40000000ull), 0);
	/* Owner 1 is bit 2 only: outside the columns' bits, so it prints as empty space. */
	REQUIRE_EQ(s2pt_set_owner(&f.pt, 0, KiB(8), 1), 0);
	/* Owner 0x30 sets bits 6 and 7 (S2AP): an invalid entry with R and W. */
	REQUIRE_EQ(s2pt_set_owner(&f.pt, KiB(8), KiB(4), 0x30), 0);
	check_text(&f.pt, "---[ Guest IPA ]---\n"
			  "0x0000000000000000-0x0000000000002000           8K 3\n"
			  "0x0000000000002000-0x0000000000003000           4K 3 F R W px ux        \n"
			  "0x0000000000003000-0x0000000000200000        2036K 3\n"
			  "0x0000000000200000-0x0000000040000000        1022M 2\n"
			  "0x0000000040000000-0x0000010000000000        1023G 1\n");
	fx_fini(&f);
}

TEST(ptdump_64k_52bit_and_xnx)
{
	struct fx f;

	/* 64K, 52-bit IPA and PA: 3 levels from 1, 4T per level-1 entry, OA[51:48] in 15:12. */
	REQUIRE_EQ(fx_init_flags(&f, 52, 65536, 52, 16, 0x40000000ull, S2PT_CONFIG_XNX), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 0, 0xf000000000000ull, MiB(512), RW, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, 1ull << 51, 0xf000000010000ull, KiB(64),
			    S2PT_PROT_R | S2PT_PROT_PX, NORMAL, 0), 0);
	REQUIRE_EQ(s2pt_map(&f.pt, (1ull << 51) + KiB(64), 0x10000, KiB(64),
			    S2PT_PROT_R | S2PT_PROT_UX, NORMAL, 0), 0);
	check_text(&f.pt, "---[ Guest IPA ]---\n"
			  "0x0000000000000000-0x0000000020000000         512M 2   R W PXNUXN AF BLK\n"
			  "0x0000000020000000-0x0000040000000000     4193792M 2\n"
			  "0x0000040000000000-0x0008000000000000        2044T 1\n"
			  "0x0008000000000000-0x0008000000010000          64K 3   R   px UXN AF    \n"
			  "0x0008000000010000-0x0008000000020000          64K 3   R   PXNux  AF    \n"
			  "0x0008000000020000-0x0008000020000000      524160K 3\n"
			  "0x0008000020000000-0x0008040000000000     4193792M 2\n"
			  "0x0008040000000000-0x0010000000000000        2044T 1\n");
	fx_fini(&f);
}

TEST(ptdump_small_buffers)
{
	struct fx f;
	size_t needed = 12345, n = sizeof(text_4k) - 1;
	char *buf;

	REQUIRE_EQ(setup_4k(&f), 0);
	/* A size query. */
	CHECK_EQ(s2pt_dump(&f.pt, NULL, 0, &needed), 0);
	CHECK_EQ(needed, n);
	buf = malloc(n + 64);
	REQUIRE(buf != NULL);
	/* Every length up to the full text: a NUL-terminated prefix, nothing written past len. */
	for (size_t len = 1; len <= n + 1; len++) {
		memset(buf, 'Z', n + 64);
		needed = 0;
		CHECK_EQ(s2pt_dump(&f.pt, buf, len, &needed), 0);
		CHECK_EQ(needed, n);
		CHECK_EQ(strlen(buf), len - 1 < n ? len - 1 : n);
		CHECK(memcmp(buf, text_4k, strlen(buf)) == 0);
		for (size_t i = len; i < n + 64; i++)
			if (buf[i] != 'Z') {
				CHECK_MSG(0, "len %zu: byte %zu written", len, i);
				break;
			}
	}
	CHECK(strcmp(buf, text_4k) == 0); /* the last round had room for all of it */
	/* Exactly the text without room for the NUL: cut by one byte, and says so. */
	CHECK_EQ(s2pt_dump(&f.pt, buf, n, &needed), 0);
	CHECK_EQ(needed, n);
	CHECK_EQ(strlen(buf), n - 1);
	/* The header alone needs this many bytes. */
	CHECK_EQ(s2pt_dump(&f.pt, buf, sizeof(hdr), &needed), 0);
	CHECK(strcmp(buf, hdr) == 0);
	/* Bad arguments. */
	CHECK_EQ(s2pt_dump(&f.pt, buf, 16, NULL), S2PT_EINVAL);
	CHECK_EQ(s2pt_dump(&f.pt, NULL, 16, &needed), S2PT_EINVAL);
	/* A destroyed table: an error, an empty string, nothing needed. */
	s2pt_pgtable_destroy(&f.pt);
	buf[0] = 'Z';
	needed = 99;
	CHECK_EQ(s2pt_dump(&f.pt, buf, 16, &needed), S2PT_EDESTROYED);
	CHECK_EQ(needed, 0);
	CHECK_EQ(buf[0], 0);
	free(buf);
	fx_fini(&f);
}
