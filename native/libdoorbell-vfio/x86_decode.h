/* Decoding of the x86-64 data moves a compiler emits for 1/2/4/8-byte volatile loads and stores, for the BAR
 * trap of libdoorbell-vfio (facts from the Intel SDM vol. 2: MOV 88/89/8A/8B/C6/C7, MOVZX 0F B6/B7, MOVSX 0F BE/BF,
 * MOVSXD 63; prefixes 66/67/segment; REX; ModRM/SIB/displacement encoding). */
#ifndef DOORBELL_X86_DECODE_H
#define DOORBELL_X86_DECODE_H
#include <stdint.h>

enum db_ext { DB_EXT_NONE, DB_EXT_ZERO, DB_EXT_SIGN };

struct db_insn {
	int len;        /* instruction length in bytes */
	int size;       /* memory access size: 1, 2, 4, 8 */
	int store;      /* 1 = memory is written */
	int has_imm;    /* store of an immediate */
	uint64_t imm;   /* the immediate, already extended to size */
	int reg;        /* register operand 0..15 (rax..r15) */
	int rex;        /* REX byte seen (0 if none): selects spl/bpl/sil/dil rather than ah/ch/dh/bh */
	int dst_size;   /* loads: destination register width */
	enum db_ext ext;
};

/* Returns 1 and fills *out when the bytes at p start a supported memory move; 0 otherwise. */
int db_decode(const uint8_t *p, struct db_insn *out);

#endif
