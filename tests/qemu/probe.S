// s2pt QEMU judge: a bare-metal probe that runs at EL2 on `qemu-system-aarch64 -M virt,
// virtualization=on` and asks the emulated MMU to walk stage-2 tables built by s2pt.
//
// The host (tests/test_qemu_judge.py) places, with `-device loader`:
//   CFG_BASE   a configuration block (layout below),
//   the IPA lists the block points to, and the table image at the pool's base PA.
// The probe writes a result buffer (header + records) to a host file through semihosting
// and leaves QEMU with SYS_EXIT (ADP_Stopped_ApplicationExit, exit code = status).
//
// Configuration block at CFG_BASE (all fields little-endian 64-bit):
//   0x000 magic CFG_MAGIC
//   0x008 mode: 0 = AT S12E1R + AT S12E1W per IPA (record: PAR after R, PAR after W)
//               1 = EL1 accesses: load, store, branch to each IPA from EL1 (3 records per IPA)
//               2 = as 1, then a branch to the IPA from EL0 (4 records per IPA)
//               3 = stage 1 on (the VM's stage-1 block below): AT S12E1R, S12E1W, S12E0R,
//                   S12E0W per VA (record: the four PARs)
//               4 = stage 1 on: as 2 (EL1 load, store, branch; EL0 branch), then a load and a
//                   store from EL0 (6 records per VA)
//   0x010 number of VMs
//   0x018 address of the result buffer
//   0x100 result file name, NUL-terminated (at most 255 bytes)
//   0x200 + 48*i  VM i: VTCR_EL2, VTTBR_EL2, number of IPAs, address of the IPA list,
//                 HCR_EL2 (RW and VM must be set; e.g. DC, FWB per VM), reserved (u64 each)
//   0x2000 + 48*i VM i's stage 1 (modes 3, 4 only): SCTLR_EL1 (M = 1), TCR_EL1, TTBR0_EL1,
//                 MAIR_EL1, TTBR1_EL1, reserved (u64 each); the stage-1 tables are guest RAM
//                 the VM maps (the host loads their image). TCR_EL1.EPD0 / EPD1 say which
//                 halves have tables; mode 4 needs TTBR0 (the EL1 code page is a low VA)
//
// Result buffer (64-byte header, then the records):
//   0x00 RES_MAGIC, 0x08 status (0 ok), 0x10 number of records, 0x18 words per record,
//   0x20 ESR_EL2, 0x28 ELR_EL2, 0x30 FAR_EL2 of an unexpected EL2 exception,
//   0x38 index of the VM being probed (progress).
// Mode 0 record (2 words): PAR_EL1 after AT S12E1R, PAR_EL1 after AT S12E1W.
// Mode 3 record (4 words): PAR_EL1 after AT S12E1R, S12E1W, S12E0R, S12E0W.
// Mode 1/2 record (4 words): outcome, then
//   0 access completed (HVC #0 from the EL1 stub):        ESR_EL2 of the HVC, 0, 0
//   1 abort taken to EL2 (EC 0x24 data / 0x20 instr.):    ESR_EL2, HPFAR_EL2, FAR_EL2
//   2 EL1 took an exception (HVC #1 from its vector for   ESR_EL1, ELR_EL1, FAR_EL1
//     a synchronous exception from EL1 or from EL0), e.g. the UDF fetched after a branch
//     that translated
//   3 anything else reached EL2 from EL1:                 ESR_EL2, ELR_EL2, FAR_EL2
// The EL0 branch (mode 2, kind 3) runs the EL0 stub of the EL1 code page at EL0t; its own
// exceptions (the UDF) go to EL1 (HCR_EL2.TGE = 0), stage-2 aborts to EL2. The EL0 load and
// store (mode 4, kinds 4 and 5) end with SVC #0, which EL1's vector reports (outcome 2, EC
// 0x15); with stage 1 on, stage-1 faults of EL1 and EL0 are taken at EL1 and reported the
// same way (outcome 2: ESR_EL1, ELR_EL1, FAR_EL1). In modes 3 and 4 the EL1 code page must be
// mapped by both stages, VA = IPA = PA, EL1 and EL0 read + execute.
//
// Register use while probing (EL1 stubs touch only x0 and x1):
//   x20 config block, x21 result header, x22 next record, x23 VM count, x24 VM index,
//   x25 mode, x26 VM descriptor, x27 IPAs left, x28 IPA list cursor, x19 access kind (modes 1,
//   2, 4), x18 access kinds per IPA (modes 1, 2, 4).

        .equ    CFG_BASE,       0x40100000
        .equ    CFG_MAGIC,      0x31425250544d5153      // "SQMTPRB1"
        .equ    RES_MAGIC,      0x3153455254504d51      // "QMPTRES1"
        .equ    CFG_MODE,       0x008
        .equ    CFG_NVMS,       0x010
        .equ    CFG_OUT,        0x018
        .equ    CFG_NAME,       0x100
        .equ    CFG_VMS,        0x200
        .equ    CFG_S1,         0x2000                  // stage-1 blocks (modes 3, 4)
        .equ    CFG_S1_SIZE,    48                      // SCTLR, TCR, TTBR0, MAIR, TTBR1, -

        .equ    RES_STATUS,     0x08
        .equ    RES_NREC,       0x10
        .equ    RES_RECWORDS,   0x18
        .equ    RES_ESR,        0x20
        .equ    RES_ELR,        0x28
        .equ    RES_FAR,        0x30
        .equ    RES_VM,         0x38
        .equ    RES_HDR,        64

        .equ    CFG_VM_SIZE,    48
        .equ    VM_HCR,         32                      // HCR_EL2 in a VM descriptor

        .equ    HCR_VAL,        (1 << 31) | (1 << 0)    // RW: EL1 is AArch64; VM: stage 2 on
        .equ    SCTLR_EL1_VAL,  0x30d00800              // RES1 bits only: M = 0, stage 1 off
                                                        // (modes 3, 4: SCTLR_EL1 per VM)
        .equ    SPSR_EL1H,      0x3c5                   // EL1h, D, A, I, F masked
        .equ    SPSR_EL0T,      0x3c0                   // EL0t, D, A, I, F masked

        .equ    SYS_OPEN,       0x01
        .equ    SYS_CLOSE,      0x02
        .equ    SYS_WRITE,      0x05
        .equ    SYS_EXIT,       0x18
        .equ    ADP_EXIT,       0x20026                 // ADP_Stopped_ApplicationExit
        .equ    OPEN_WB,        5                       // fopen mode "wb"

        .equ    ST_OK,          0
        .equ    ST_NOT_EL2,     0x10
        .equ    ST_BAD_MODE,    0x11
        .equ    ST_BAD_CFG,     0x15
        .equ    ST_EL2_EXC,     0x12
        .equ    ST_OPEN,        0x13
        .equ    ST_WRITE,       0x14

        .macro  semihost op
        mov     w0, #\op
        hlt     #0xf000
        .endm

// ---------------------------------------------------------------------------------------------
        .section .text.boot, "ax"
        .global _start
_start:
        mov     x21, #0                 // no result buffer yet (fatal paths check this)
        adr     x0, el2_vectors
        msr     vbar_el2, x0
        isb
        mrs     x0, CurrentEL
        ubfx    x0, x0, #2, #2
        cmp     x0, #2
        b.ne    not_el2

        ldr     x20, =CFG_BASE
        ldr     x0, [x20]
        ldr     x1, =CFG_MAGIC
        cmp     x0, x1
        b.ne    bad_config              // no result buffer known: exit code only

        ldr     x21, [x20, #CFG_OUT]
        add     x22, x21, #RES_HDR
        ldr     x0, =RES_MAGIC
        str     x0, [x21]
        str     xzr, [x21, #RES_STATUS]
        str     xzr, [x21, #RES_NREC]
        str     xzr, [x21, #RES_ESR]
        str     xzr, [x21, #RES_ELR]
        str     xzr, [x21, #RES_FAR]
        str     xzr, [x21, #RES_VM]
        ldr     x23, [x20, #CFG_NVMS]
        mov     x24, #0
        ldr     x25, [x20, #CFG_MODE]
        cmp     x25, #4
        b.hi    bad_mode
        mov     x0, #2                  // 2 words per record in mode 0, 4 in modes 1..4
        cbz     x25, 1f
        mov     x0, #4
1:      str     x0, [x21, #RES_RECWORDS]
        add     x18, x25, #2            // access kinds: 3 in mode 1, 4 in mode 2, 6 in mode 4
        cmp     x25, #4
        b.ne    1f
        mov     x18, #6
1:

        // EL1 state: stage 1 off (VA = IPA), its vectors in the EL1 code page
        ldr     x0, =SCTLR_EL1_VAL
        msr     sctlr_el1, x0
        ldr     x0, =el1_vectors
        msr     vbar_el1, x0
        ldr     x0, =HCR_VAL
        msr     hcr_el2, x0
        isb
        dsb     sy
        tlbi    alle1
        dsb     sy
        isb

vm_loop:
        cmp     x24, x23
        b.hs    all_done
        str     x24, [x21, #RES_VM]
        add     x26, x20, #CFG_VMS
        mov     x0, #CFG_VM_SIZE
        madd    x26, x24, x0, x26
        ldr     x0, [x26, #VM_HCR]
        ldr     x1, =HCR_VAL
        bic     x2, x1, x0
        cbnz    x2, bad_vm              // RW or VM clear
        msr     hcr_el2, x0
        ldr     x0, [x26, #0]
        msr     vtcr_el2, x0
        ldr     x0, [x26, #8]
        msr     vttbr_el2, x0
        cmp     x25, #3                 // modes 3, 4: this VM's stage 1
        b.lo    1f
        add     x1, x20, #CFG_S1
        mov     x0, #CFG_S1_SIZE
        madd    x1, x24, x0, x1
        ldp     x2, x3, [x1]
        ldp     x4, x5, [x1, #16]
        ldr     x6, [x1, #32]
        msr     tcr_el1, x3
        msr     ttbr0_el1, x4
        msr     mair_el1, x5
        msr     ttbr1_el1, x6
        isb
        msr     sctlr_el1, x2
1:      isb
        dsb     ishst
        tlbi    vmalls12e1              // this VMID, both stages
        dsb     sy
        isb
        ldr     x27, [x26, #16]
        ldr     x28, [x26, #24]
        cmp     x25, #3
        b.eq    at2_loop
        cbnz    x25, el1_mode

// ---- mode 0: address translation instructions -----------------------------------------------
at_loop:
        cbz     x27, vm_next
        ldr     x0, [x28], #8
        at      s12e1r, x0
        isb
        mrs     x1, par_el1
        at      s12e1w, x0
        isb
        mrs     x2, par_el1
        stp     x1, x2, [x22], #16
        sub     x27, x27, #1
        b       at_loop

vm_next:
        add     x24, x24, #1
        b       vm_loop

// ---- mode 3: address translation instructions, stage 1 on ----------------------------------
at2_loop:
        cbz     x27, vm_next
        ldr     x0, [x28], #8
        at      s12e1r, x0
        isb
        mrs     x1, par_el1
        at      s12e1w, x0
        isb
        mrs     x2, par_el1
        at      s12e0r, x0
        isb
        mrs     x3, par_el1
        at      s12e0w, x0
        isb
        mrs     x4, par_el1
        stp     x1, x2, [x22], #16
        stp     x3, x4, [x22], #16
        sub     x27, x27, #1
        b       at2_loop

// ---- mode 1: real accesses from EL1 -----------------------------------------------------------
el1_mode:
        mov     x19, #0
el1_ipa_loop:
        cbz     x27, vm_next
el1_kind_loop:
        ldr     x1, =el1_stubs
        add     x1, x1, x19, lsl #4     // stubs are 16 bytes apart: load, store, branch,
        msr     elr_el2, x1             // EL0 branch, EL0 load, EL0 store
        mov     x1, #SPSR_EL1H
        cmp     x19, #3                 // kinds 3.. run at EL0
        b.lo    1f
        mov     x1, #SPSR_EL0T
1:      msr     spsr_el2, x1
        ldr     x0, [x28]
        mov     x1, #0
        isb
        eret                            // comes back through lower_sync, which branches to:
el1_resume:
        add     x19, x19, #1
        cmp     x19, x18                // access kinds per IPA (x18)
        b.lo    el1_kind_loop
        mov     x19, #0
        add     x28, x28, #8
        sub     x27, x27, #1
        b       el1_ipa_loop

// Synchronous exception from EL1 (entered from the vector below): record it, go on.
lower_sync:
        mrs     x2, esr_el2
        lsr     x3, x2, #26
        cmp     x3, #0x16               // HVC from AArch64
        b.ne    1f
        and     x4, x2, #0xffff
        cbz     x4, rec_done
        cmp     x4, #1
        b.eq    rec_el1_exception
        b       rec_unexpected
1:      cmp     x3, #0x24               // data abort from a lower EL
        b.eq    rec_abort
        cmp     x3, #0x20               // instruction abort from a lower EL
        b.eq    rec_abort
        b       rec_unexpected

rec_done:
        mov     x5, #0
        stp     x5, x2, [x22], #16
        stp     xzr, xzr, [x22], #16
        b       el1_resume
rec_abort:
        mov     x5, #1
        mrs     x6, hpfar_el2
        mrs     x7, far_el2
        stp     x5, x2, [x22], #16
        stp     x6, x7, [x22], #16
        b       el1_resume
rec_el1_exception:
        mov     x5, #2
        mrs     x2, esr_el1
        mrs     x6, elr_el1
        mrs     x7, far_el1
        stp     x5, x2, [x22], #16
        stp     x6, x7, [x22], #16
        b       el1_resume
rec_unexpected:
        mov     x5, #3
        mrs     x6, elr_el2
        mrs     x7, far_el2
        stp     x5, x2, [x22], #16
        stp     x6, x7, [x22], #16
        b       el1_resume

// ---- the end: write the buffer to the host file, exit ----------------------------------------
all_done:
        sub     x0, x22, x21
        sub     x0, x0, #RES_HDR
        ldr     x1, [x21, #RES_RECWORDS]
        lsl     x1, x1, #3
        udiv    x0, x0, x1
        str     x0, [x21, #RES_NREC]
        mov     x19, #ST_OK
        b       write_and_exit

not_el2:
        mov     x0, #ST_NOT_EL2
        b       exit_with
bad_config:
        mov     x0, #ST_BAD_CFG
        b       exit_with
bad_mode:
        mov     x19, #ST_BAD_MODE
        b       write_and_exit
bad_vm:                                 // a VM descriptor the probe refuses (RES_VM says which)
        mov     x19, #ST_BAD_CFG
        b       write_and_exit

// An exception taken at EL2 itself: nothing the probe expects. Report and stop.
el2_fatal:
        cbz     x21, 1f
        mrs     x0, esr_el2
        str     x0, [x21, #RES_ESR]
        mrs     x0, elr_el2
        str     x0, [x21, #RES_ELR]
        mrs     x0, far_el2
        str     x0, [x21, #RES_FAR]
        mov     x19, #ST_EL2_EXC
        b       write_and_exit
1:      mov     x0, #ST_EL2_EXC
        b       exit_with

// x19 = status. Writes header + records to the file named in the config block.
write_and_exit:
        str     x19, [x21, #RES_STATUS]
        add     x2, x20, #CFG_NAME      // strlen of the file name
        mov     x3, #0
1:      ldrb    w4, [x2, x3]
        cbz     w4, 2f
        add     x3, x3, #1
        cmp     x3, #255
        b.lo    1b
2:      ldr     x1, =sh_block
        stp     x2, xzr, [x1]
        mov     x4, #OPEN_WB
        str     x4, [x1, #8]
        str     x3, [x1, #16]
        semihost SYS_OPEN
        cmn     x0, #1
        b.eq    open_failed
        mov     x26, x0                 // host handle
        ldr     x1, =sh_block
        str     x26, [x1]
        str     x21, [x1, #8]
        sub     x2, x22, x21            // header + the records written (so far, on failure)
        str     x2, [x1, #16]
        semihost SYS_WRITE
        mov     x27, x0                 // bytes not written
        ldr     x1, =sh_block
        str     x26, [x1]
        semihost SYS_CLOSE
        cbnz    x27, write_failed
        mov     x0, x19
        b       exit_with
open_failed:
        mov     x0, #ST_OPEN
        b       exit_with
write_failed:
        mov     x0, #ST_WRITE
        // fall through

// x0 = exit code
exit_with:
        ldr     x1, =sh_block
        ldr     x2, =ADP_EXIT
        stp     x2, x0, [x1]
        semihost SYS_EXIT
        b       .                       // not reached

        .ltorg

// ---- EL2 vector table: only "lower EL, AArch64, synchronous" is expected -----------------------
        .balign 2048
el2_vectors:
        .rept   8                       // current EL with SP0 / SPx: sync, IRQ, FIQ, SError
        b       el2_fatal
        .balign 128
        .endr
        b       lower_sync              // lower EL, AArch64: synchronous
        .balign 128
        .rept   7                       // lower EL AArch64 IRQ/FIQ/SError, lower EL AArch32
        b       el2_fatal
        .balign 128
        .endr

// ---------------------------------------------------------------------------------------------
// The EL1 code page (linked at EL1_PAGE = 0x40010000, must fit one 4 KiB page): mapped IPA = PA,
// read + execute, in every VM probed in modes 1, 2 and 4 (mode 4: VA = IPA = PA, EL1 and EL0).
        .section .text.el1, "ax"
        .global el1_vectors
el1_vectors:
        .rept   4                       // current EL with SP0: not used
        hvc     #2
        .balign 128
        .endr
        hvc     #1                      // current EL with SPx, synchronous: report to EL2
        .balign 128
        .rept   3                       // current EL with SPx: IRQ, FIQ, SError
        hvc     #2
        .balign 128
        .endr
        hvc     #1                      // lower EL (EL0) AArch64, synchronous: report to EL2
        .balign 128
        .rept   7                       // everything else: unexpected
        hvc     #2
        .balign 128
        .endr

        .global el1_stubs
el1_stubs:                              // x0 = VA (= IPA in modes 1, 2: stage 1 is off)
        ldr     x1, [x0]                // kind 0: read
        hvc     #0
        .balign 16
        str     xzr, [x0]               // kind 1: write (zeros; targets are scratch RAM)
        hvc     #0
        .balign 16
        br      x0                      // kind 2: execute (RAM is zero there: UDF at EL1)
        hvc     #3
        .balign 16
        br      x0                      // kind 3, at EL0: execute (UDF taken to EL1)
        svc     #3                      // not reached (would report EC 0x15 from EL1)
        .balign 16
        ldr     x1, [x0]                // kind 4, at EL0: read (mode 4)
        svc     #0                      // done: EL1's lower-EL vector reports EC 0x15
        .balign 16
        str     xzr, [x0]               // kind 5, at EL0: write (mode 4)
        svc     #0
        .balign 16

// ---------------------------------------------------------------------------------------------
        .section .bss
        .balign 16
sh_block:
        .space  32
