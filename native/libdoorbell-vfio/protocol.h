/* Wire protocol between libdoorbell-vfio.so and `doorbell serve` (src/Doorbell/Server/Protocol.cs holds the
 * same numbers): one SOCK_SEQPACKET packet per request and per reply, little-endian. */
#ifndef DOORBELL_PROTOCOL_H
#define DOORBELL_PROTOCOL_H
#include <stdint.h>

#define DB_PROTOCOL_VERSION 1
#define DB_MAX_PAYLOAD (1u << 20)
#define DB_MAX_FDS 253 /* SCM_MAX_FD */

enum db_op {
	DB_HELLO = 1, DB_OPEN = 2, DB_CLOSE = 3, DB_IOCTL = 4, DB_PREAD = 5, DB_PWRITE = 6,
	DB_MMAP = 7, DB_MUNMAP = 8, DB_MMIO_READ = 9, DB_MMIO_WRITE = 10, DB_STATS = 11,
	/* a trapped store through a BAR mapping: posted, as a CPU store to MMIO is on PCIe (no reply; the server logs a failure) */
	DB_MMIO_WRITE_POSTED = 12,
	/* benchmarks: a0 = 1 starts latency stamps, a0 = 0 stops (returns their number), a0 = 2 reads up to 4096 from
	   index a1 (reply = u64 kind, u64 CLOCK_MONOTONIC ns pairs) */
	DB_STAMPS = 13,
};

struct db_request {
	uint32_t op;
	int32_t fd;
	uint64_t a0, a1, a2, a3;
	uint32_t payload_len;
	uint32_t reserved;
};

struct db_reply {
	int64_t ret;
	uint32_t payload_len;
	uint32_t reserved;
};

_Static_assert(sizeof(struct db_request) == 48, "request header is 48 bytes");
_Static_assert(sizeof(struct db_reply) == 16, "reply header is 16 bytes");
#endif
