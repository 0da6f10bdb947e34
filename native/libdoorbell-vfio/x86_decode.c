#include "x86_decode.h"
#include <string.h>

int db_decode(const uint8_t *p, struct db_insn *d)
{
	int i = 0, opsize16 = 0, rex = 0;
	memset(d, 0, sizeof(*d));
	for (;; i++) { /* legacy prefixes */
		uint8_t b = p[i];
		if (b == 0x66) opsize16 = 1;
		else if (b == 0x67 || b == 0x2e || b == 0x3e || b == 0x26 || b == 0x36 || b == 0x64 || b == 0x65) continue;
		else break;
		if (i > 4) return 0;
	}
	if ((p[i] & 0xf0) == 0x40) rex = p[i++];
	int w = (rex & 8) != 0, r = (rex & 4) != 0;
	int opsize = w ? 8 : opsize16 ? 2 : 4;
	uint8_t op = p[i++];
	int imm_len = 0;
	switch (op) {
	case 0x88: d->store = 1; d->size = 1; break;
	case 0x89: d->store = 1; d->size = opsize; break;
	case 0x8a: d->size = 1; d->dst_size = 1; break;
	case 0x8b: d->size = opsize; d->dst_size = opsize; break;
	case 0xc6: d->store = 1; d->size = 1; d->has_imm = 1; imm_len = 1; break;
	case 0xc7: d->store = 1; d->size = opsize; d->has_imm = 1; imm_len = opsize == 2 ? 2 : 4; break;
	case 0x63: d->size = 4; d->dst_size = w ? 8 : 4; d->ext = w ? DB_EXT_SIGN : DB_EXT_NONE; break;
	case 0x0f: {
		uint8_t op2 = p[i++];
		if (op2 == 0xb6 || op2 == 0xbe) d->size = 1;
		else if (op2 == 0xb7 || op2 == 0xbf) d->size = 2;
		else return 0;
		d->dst_size = opsize;
		d->ext = (op2 == 0xb6 || op2 == 0xb7) ? DB_EXT_ZERO : DB_EXT_SIGN;
		break;
	}
	default:
		return 0;
	}
	uint8_t modrm = p[i++];
	int mod = modrm >> 6, reg = (modrm >> 3) & 7, rm = modrm & 7;
	if (mod == 3) return 0; /* a register operand never faults */
	if ((op == 0xc6 || op == 0xc7) && reg != 0) return 0;
	if (rm == 4) {
		uint8_t sib = p[i++];
		if (mod == 0 && (sib & 7) == 5) i += 4;
	} else if (mod == 0 && rm == 5) {
		i += 4; /* RIP-relative */
	}
	if (mod == 1) i += 1;
	else if (mod == 2) i += 4;
	if (imm_len) {
		uint64_t v = 0;
		for (int k = 0; k < imm_len; k++) v |= (uint64_t)p[i + k] << (8 * k);
		if (imm_len == 4 && d->size == 8) v = (uint64_t)(int64_t)(int32_t)v; /* imm32 sign-extended to 64 */
		d->imm = v;
		i += imm_len;
	}
	d->reg = reg | (r ? 8 : 0);
	d->rex = rex;
	d->len = i;
	return 1;
}
