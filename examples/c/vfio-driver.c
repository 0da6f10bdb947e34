/* A userspace VFIO driver for Doorbell's multi-queue DMA device (PCI 1234:db01), written against <linux/vfio.h>
 * only, following the flow of the kernel's VFIO documentation (Documentation/driver-api/vfio.rst): container, group
 * viability, SET_IOMMU type1v2, IOMMU_GET_INFO with its IOVA-range capability, MAP_DMA of its own buffer,
 * GET_DEVICE_FD, region info with capabilities, config space, BAR0 through mmap and through pread/pwrite, MSI-X with
 * SET_IRQS + eventfd + epoll, DMA into its own buffer (bytes checked here), a DMA to an unmapped IOVA that faults,
 * RESET and UNMAP_DMA. Nothing in it knows about Doorbell: run it under scripts/doorbell-exec.
 *   vfio-driver [BDF] [--expect-eperm] [--hold] [--bench [ITERATIONS]]
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <linux/vfio.h>
#include <setjmp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define CHECK(c, ...) do { if (!(c)) { fprintf(stderr, "FAIL %s:%d: ", __FILE__, __LINE__); fprintf(stderr, __VA_ARGS__); \
	fprintf(stderr, " (errno %d %s)\n", errno, strerror(errno)); exit(1); } } while (0)

/* The device's register map (BAR0) */
enum { ID = 0x000, NUM_QUEUES = 0x004, CTRL = 0x008, Q0 = 0x100, SQ_BASE = 0x00, CQ_BASE = 0x08, QSIZE = 0x10,
       QCTRL = 0x14, SQ_TAIL = 0x18, SQ_HEAD = 0x1c, CQ_TAIL = 0x20, QERROR = 0x24 };
struct desc { uint64_t src, dst; uint32_t len, flags; uint64_t cookie; };
struct cpl { uint64_t cookie; uint32_t status, len; };

static const uint64_t IOVA = 0x100000000ull;
static const size_t BUF = 0x10000;

static double now(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec + t.tv_nsec * 1e-9; }

/* ioctl with an argsz-led struct that may grow (capability chains) */
static void *info_with_caps(int fd, unsigned long req, void *base, size_t basesz)
{
	void *p = malloc(basesz);
	memcpy(p, base, basesz);
	CHECK(ioctl(fd, req, p) == 0, "info ioctl %lx", req);
	uint32_t need = *(uint32_t *)p;
	if (need > basesz) {
		p = realloc(p, need);
		memcpy(p, base, basesz);
		*(uint32_t *)p = need;
		CHECK(ioctl(fd, req, p) == 0, "info ioctl with caps %lx", req);
	}
	return p;
}

static struct vfio_info_cap_header *find_cap(void *info, uint32_t off, uint16_t id)
{
	while (off) {
		struct vfio_info_cap_header *h = (void *)((char *)info + off);
		if (h->id == id) return h;
		off = h->next;
	}
	return NULL;
}

static sigjmp_buf bus_jmp;
static void on_sigbus(int sig) { (void)sig; siglongjmp(bus_jmp, 1); }

/* 1 when a 32-bit store to p raises SIGBUS */
static __attribute__((noinline)) int store_raises_sigbus(volatile uint32_t *p, uint32_t v)
{
	struct sigaction sa = { .sa_handler = on_sigbus }, old;
	sigaction(SIGBUS, &sa, &old);
	int bused = 0;
	if (sigsetjmp(bus_jmp, 1) == 0) *p = v;
	else bused = 1;
	sigaction(SIGBUS, &old, NULL);
	return bused;
}

/* ---------------------------------------------------------------- --bench
 * Every figure is measured per iteration with CLOCK_MONOTONIC and reported as min / median / mean, side by side in one
 * run. The MSI-X loop is paired two ways with a bare cross-process eventfd between this process and a child:
 *  - the whole loop (doorbell store → device → MSI-X → eventfd readable) crosses processes twice (the store wakes the
 *    server, the eventfd wakes us): its pair is the bare round trip (write → the child wakes and writes back → readable);
 *  - the measure, MSI-X → eventfd readable, crosses once: its pair is the bare one-way write → readable (the
 *    child stamps before its write(2), we stamp when epoll_wait returns). The MSI-X side needs the server's stamp of
 *    the device's MSI-X write; the library offers it (doorbell_vfio_stamps, found with dlsym, so this program still
 *    runs against anything else and then prints the loop figures only). */
struct stats { double min, median, mean; };

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static struct stats summarize(double *v, int n)
{
	struct stats s = { 0, 0, 0 };
	if (n <= 0) return s;
	double sum = 0;
	for (int i = 0; i < n; i++) sum += v[i];
	qsort(v, (size_t)n, sizeof *v, cmp_double);
	s.min = v[0] * 1e6;
	s.median = (n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2) * 1e6;
	s.mean = sum / n * 1e6;
	return s;
}

static void print_stats(const char *what, struct stats s)
{
	printf("BENCH %-58s min %8.2f  median %8.2f  mean %8.2f us\n", what, s.min, s.median, s.mean);
}

/* one doorbell: descriptor t in the ring, SQ_TAIL store through the mapping, wait until the eventfd is readable */
static double msix_once(volatile uint8_t *q0, struct desc *sq, int ep, int efd, uint32_t t, double *t0out)
{
	struct epoll_event got;
	uint64_t cnt;
	sq[t % 16] = (struct desc){ IOVA + 0x2000, IOVA + 0x3000, 8, 0, t };
	double t0 = now();
	*(volatile uint32_t *)(q0 + SQ_TAIL) = (t + 1) % 16;
	CHECK(epoll_wait(ep, &got, 1, 2000) == 1, "bench: MSI-X %u did not arrive", t);
	double t1 = now();
	CHECK(read(efd, &cnt, 8) == 8, "bench: eventfd read");
	if (t0out) *t0out = t0;
	return t1;
}

static void run_bench(int n, int dev, int container, volatile uint8_t *bar, volatile uint8_t *q0, uint64_t bar0_off,
		      uint8_t *buf, struct desc *sq, int ep, int efd)
{
	double *v = calloc((size_t)n, sizeof *v), *t0s = calloc((size_t)n, sizeof *t0s), *t1s = calloc((size_t)n, sizeof *t1s);
	CHECK(v && t0s && t1s, "bench: memory");
	uint32_t idp;
	printf("BENCH %d iterations per case after 0.5 s (MSI-X: 1.5 s) of warm-up each (CLOCK_MONOTONIC, microseconds)\n", n);
	/* warm-up: a fresh server compiles its hot paths while they run (tiered JIT); time only the settled code */
	double w = now();
	while (now() - w < 0.5) (void)*(volatile uint32_t *)(bar + ID);
	for (int i = 0; i < n; i++) { double t0 = now(); (void)*(volatile uint32_t *)(bar + ID); v[i] = now() - t0; }
	print_stats("BAR0 read through the mmap trap", summarize(v, n));
	for (w = now(); now() - w < 0.5;) CHECK(pread(dev, &idp, 4, bar0_off + ID) == 4, "bench pread");
	for (int i = 0; i < n; i++) { double t0 = now(); CHECK(pread(dev, &idp, 4, bar0_off + ID) == 4, "bench pread"); v[i] = now() - t0; }
	print_stats("BAR0 read through pread", summarize(v, n));

	/* the MSI-X loop, then the bare pair, then the loop with the server's stamps (the stamps' own cost shows as the
	   difference between the two loop rows) */
	uint32_t t = 3; /* descriptors 0-2 were used above */
	for (w = now(); now() - w < 1.5; t++) msix_once(q0, sq, ep, efd, t, NULL);
	for (int i = 0; i < n; i++, t++) { double t0; double t1 = msix_once(q0, sq, ep, efd, t, &t0); v[i] = t1 - t0; }
	struct stats loop = summarize(v, n);

	int a = eventfd(0, EFD_CLOEXEC), b = eventfd(0, EFD_CLOEXEC), bep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event bev = { .events = EPOLLIN };
	CHECK(a >= 0 && b >= 0 && bep >= 0 && epoll_ctl(bep, EPOLL_CTL_ADD, a, &bev) == 0, "bench: bare eventfds");
	volatile double *shared = mmap(NULL, 4096, PROT_READ | PROT_WRITE, MAP_SHARED | MAP_ANONYMOUS, -1, 0);
	CHECK(shared != MAP_FAILED, "bench: shared page");
	pid_t c = fork();
	CHECK(c >= 0, "bench: fork");
	if (c == 0) {
		uint64_t x;
		for (int i = 0; i < n; i++) {
			if (read(b, &x, 8) != 8) _exit(1);
			*shared = now();
			x = 1;
			if (write(a, &x, 8) != 8) _exit(1);
		}
		_exit(0);
	}
	double *ow = calloc((size_t)n, sizeof *ow);
	CHECK(ow, "bench: memory");
	for (int i = 0; i < n; i++) {
		uint64_t x = 1;
		struct epoll_event got;
		double t0 = now();
		CHECK(write(b, &x, 8) == 8, "bench: bare write");
		CHECK(epoll_wait(bep, &got, 1, 2000) == 1, "bench: bare eventfd did not become readable");
		double t1 = now();
		CHECK(read(a, &x, 8) == 8, "bench: bare read");
		v[i] = t1 - t0;
		ow[i] = t1 - *shared;
	}
	waitpid(c, NULL, 0);
	struct stats rt = summarize(v, n), one = summarize(ow, n);

	print_stats("doorbell store -> device DMA -> MSI-X -> eventfd readable", loop);
	print_stats("bare eventfd round trip (write -> child -> write back -> readable)", rt);
	print_stats("bare eventfd one way (child's write -> readable)", one);
	printf("BENCH ratio loop / bare round trip (median) %.2f, loop / bare one way (median) %.2f\n", loop.median / rt.median,
	       loop.median / one.median);

	long (*stamps)(int, uint64_t *, long) = (long (*)(int, uint64_t *, long))dlsym(RTLD_DEFAULT, "doorbell_vfio_stamps");
	long max = 8L * n + 64;
	uint64_t *st = stamps ? calloc((size_t)max, 16) : NULL;
	if (stamps && st && stamps(1, NULL, 0) == 0) {
		for (int i = 0; i < n; i++, t++) t1s[i] = msix_once(q0, sq, ep, efd, t, &t0s[i]);
		long k = stamps(0, st, max);
		/* per iteration: 1 store received, 2 MSI-X issued, 3 eventfd signalled, 4 request done (server's clock = ours) */
		double *recv = calloc((size_t)n, sizeof *recv), *msi = calloc((size_t)n, sizeof *msi), *sig = calloc((size_t)n, sizeof *sig),
		       *done = calloc((size_t)n, sizeof *done);
		int it = -1, complete = 0;
		for (long j = 0; j < k; j++) {
			double ts = st[2 * j + 1] * 1e-9;
			switch (st[2 * j]) {
			case 1: it++; if (it < n) recv[it] = ts; break;
			case 2: if (it >= 0 && it < n) msi[it] = ts; break;
			case 3: if (it >= 0 && it < n) sig[it] = ts; break;
			case 4: if (it >= 0 && it < n) { done[it] = ts; complete++; } break;
			}
		}
		if (it + 1 != n || complete != n) {
			printf("BENCH server stamps: %ld stamps for %d iterations do not pair up; hops not reported\n", k, n);
		} else {
			for (int i = 0; i < n; i++) v[i] = t1s[i] - t0s[i];
			print_stats("loop again, with the server's stamps on", summarize(v, n));
			for (int i = 0; i < n; i++) v[i] = recv[i] - t0s[i];
			print_stats("  hop: store (trap, send) -> server has it off the socket", summarize(v, n));
			for (int i = 0; i < n; i++) v[i] = msi[i] - recv[i];
			print_stats("  hop: -> device DMA done, MSI-X issued", summarize(v, n));
			for (int i = 0; i < n; i++) v[i] = sig[i] - msi[i];
			print_stats("  hop: MSI-X -> SMMU -> ITS -> LPI -> handler signals eventfd", summarize(v, n));
			for (int i = 0; i < n; i++) v[i] = t1s[i] - sig[i];
			print_stats("  hop: eventfd write(2) -> readable in this process", summarize(v, n));
			for (int i = 0; i < n; i++) v[i] = done[i] - sig[i];
			print_stats("  (server: eventfd signalled -> request done)", summarize(v, n));
			for (int i = 0; i < n; i++) v[i] = t1s[i] - msi[i];
			struct stats m2e = summarize(v, n);
			print_stats("MSI-X -> eventfd readable in this process", m2e);
			printf("BENCH ratio MSI-X -> eventfd readable / bare one way (median) %.2f (goal <= 3)\n", m2e.median / one.median);
		}
		free(recv); free(msi); free(sig); free(done);
	}
	free(st);

	/* MAP_DMA + UNMAP_DMA pairs */
	struct vfio_iommu_type1_dma_map m2 = { .argsz = sizeof m2, .flags = 3, .vaddr = (uintptr_t)buf, .iova = IOVA + 0x100000, .size = 4096 };
	struct vfio_iommu_type1_dma_unmap u2 = { .argsz = sizeof u2, .iova = IOVA + 0x100000, .size = 4096 };
	double t0 = now();
	for (int i = 0; i < n; i++) {
		CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &m2) == 0, "bench map");
		u2.size = 4096;
		CHECK(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u2) == 0, "bench unmap");
	}
	printf("BENCH MAP_DMA + UNMAP_DMA pairs per second %.0f\n", n / (now() - t0));
	free(v); free(t0s); free(t1s); free(ow);
}

int main(int argc, char **argv)
{
	const char *bdf = "0000:00:01.0";
	int expect_eperm = 0, hold = 0, bench = 0;
	for (int i = 1; i < argc; i++) {
		if (!strcmp(argv[i], "--expect-eperm")) expect_eperm = 1;
		else if (!strcmp(argv[i], "--hold")) hold = 1;
		else if (!strcmp(argv[i], "--bench")) {
			bench = 2000;
			if (i + 1 < argc && argv[i + 1][0] >= '1' && argv[i + 1][0] <= '9') bench = atoi(argv[++i]);
		}
		else bdf = argv[i];
	}
	setvbuf(stdout, NULL, _IONBF, 0);

	/* sysfs: the device's IOMMU group, as any VFIO program finds it */
	char path[PATH_MAX], link[PATH_MAX], real[PATH_MAX];
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/iommu_group", bdf);
	ssize_t n = readlink(path, link, sizeof link - 1);
	CHECK(n > 0, "readlink %s", path);
	link[n] = 0;
	int group_id = atoi(basename(link));
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s", bdf);
	CHECK(realpath(path, real), "realpath %s", path);
	snprintf(path, sizeof path, "/sys/bus/pci/devices/%s/vendor", bdf);
	FILE *vf = fopen(path, "r");
	CHECK(vf, "fopen %s", path);
	unsigned vendor = 0;
	CHECK(fscanf(vf, "%x", &vendor) == 1 && vendor == 0x1234, "vendor 0x%x", vendor);
	fclose(vf);
	snprintf(path, sizeof path, "/sys/kernel/iommu_groups/%d/devices", group_id);
	DIR *d = opendir(path);
	CHECK(d, "opendir %s", path);
	int listed = 0;
	for (struct dirent *e; (e = readdir(d));) listed |= !strcmp(e->d_name, bdf);
	closedir(d);
	CHECK(listed, "%s not listed in %s", bdf, path);
	printf("sysfs: %s -> %s, iommu_group %d, vendor 0x%04x\n", bdf, real, group_id, vendor);

	/* container and group */
	int container = open("/dev/vfio/vfio", O_RDWR);
	CHECK(container >= 0, "open /dev/vfio/vfio");
	CHECK(ioctl(container, VFIO_GET_API_VERSION) == VFIO_API_VERSION, "API version");
	CHECK(ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) == 1, "type1v2 supported");
	snprintf(path, sizeof path, "/dev/vfio/%d", group_id);
	int group = open(path, O_RDWR);
	CHECK(group >= 0, "open %s", path);
	struct vfio_group_status gs = { .argsz = sizeof gs };
	CHECK(ioctl(group, VFIO_GROUP_GET_STATUS, &gs) == 0 && (gs.flags & VFIO_GROUP_FLAGS_VIABLE), "group viable");
	CHECK(ioctl(group, VFIO_GROUP_SET_CONTAINER, &container) == 0, "SET_CONTAINER");
	int r = ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU);
	if (expect_eperm) {
		CHECK(r == -1 && errno == EPERM, "SET_IOMMU should fail with EPERM on a board without isolated MSIs (got %d)", r);
		printf("SET_IOMMU: EPERM (no interrupt isolation)\nPASS\n");
		return 0;
	}
	CHECK(r == 0, "SET_IOMMU type1v2");

	/* IOMMU info and its IOVA ranges */
	struct vfio_iommu_type1_info ib = { .argsz = sizeof ib };
	struct vfio_iommu_type1_info *ii = info_with_caps(container, VFIO_IOMMU_GET_INFO, &ib, sizeof ib);
	CHECK(ii->flags & VFIO_IOMMU_INFO_PGSIZES, "page sizes reported");
	CHECK(ii->flags & VFIO_IOMMU_INFO_CAPS, "capabilities reported");
	struct vfio_iommu_type1_info_cap_iova_range *rng = (void *)find_cap(ii, ii->cap_offset, VFIO_IOMMU_TYPE1_INFO_CAP_IOVA_RANGE);
	CHECK(rng && rng->nr_iovas > 0, "IOVA range capability");
	int iova_ok = 0;
	printf("IOMMU: page sizes 0x%llx, %u IOVA range(s):", (unsigned long long)ii->iova_pgsizes, rng->nr_iovas);
	for (uint32_t i = 0; i < rng->nr_iovas; i++) {
		printf(" [0x%llx-0x%llx]", (unsigned long long)rng->iova_ranges[i].start, (unsigned long long)rng->iova_ranges[i].end);
		iova_ok |= IOVA >= rng->iova_ranges[i].start && IOVA + BUF - 1 <= rng->iova_ranges[i].end;
	}
	printf("\n");
	CHECK(iova_ok, "IOVA 0x%llx inside a usable range", (unsigned long long)IOVA);

	/* our own buffer, mapped for the device */
	uint8_t *buf = mmap(NULL, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	CHECK(buf != MAP_FAILED, "mmap buffer");
	memset(buf, 0, BUF);
	struct vfio_iommu_type1_dma_map map = { .argsz = sizeof map, .flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
						.vaddr = (uintptr_t)buf, .iova = IOVA, .size = BUF };
	CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == 0, "MAP_DMA");

	/* the device */
	int dev = ioctl(group, VFIO_GROUP_GET_DEVICE_FD, bdf);
	CHECK(dev >= 0, "GET_DEVICE_FD %s", bdf);
	struct vfio_device_info di = { .argsz = sizeof di };
	CHECK(ioctl(dev, VFIO_DEVICE_GET_INFO, &di) == 0, "DEVICE_GET_INFO");
	CHECK((di.flags & VFIO_DEVICE_FLAGS_PCI) && di.num_regions >= VFIO_PCI_NUM_REGIONS && di.num_irqs >= VFIO_PCI_NUM_IRQS, "PCI device info");
	struct vfio_region_info rb = { .argsz = sizeof rb, .index = VFIO_PCI_BAR0_REGION_INDEX };
	struct vfio_region_info *bar0 = info_with_caps(dev, VFIO_DEVICE_GET_REGION_INFO, &rb, sizeof rb);
	CHECK(bar0->size >= 0x4000 && (bar0->flags & VFIO_REGION_INFO_FLAG_MMAP), "BAR0 mappable");
	CHECK((bar0->flags & VFIO_REGION_INFO_FLAG_CAPS) && find_cap(bar0, bar0->cap_offset, VFIO_REGION_INFO_CAP_MSIX_MAPPABLE),
	      "BAR0 carries the MSIX_MAPPABLE capability");
	struct vfio_region_info cr = { .argsz = sizeof cr, .index = VFIO_PCI_CONFIG_REGION_INDEX };
	CHECK(ioctl(dev, VFIO_DEVICE_GET_REGION_INFO, &cr) == 0, "config region info");
	printf("device %s: %u regions, %u irqs; BAR0 0x%llx bytes at offset 0x%llx; config %llu bytes\n", bdf, di.num_regions,
	       di.num_irqs, (unsigned long long)bar0->size, (unsigned long long)bar0->offset, (unsigned long long)cr.size);

	/* config space through the config region */
	uint16_t ids[2], cmd;
	CHECK(pread(dev, ids, 4, cr.offset) == 4 && ids[0] == 0x1234 && ids[1] == 0xdb01, "config IDs %04x:%04x", ids[0], ids[1]);
	CHECK(pread(dev, &cmd, 2, cr.offset + 4) == 2, "read COMMAND");
	cmd |= 0x6; /* memory decode, bus master */
	CHECK(pwrite(dev, &cmd, 2, cr.offset + 4) == 2, "write COMMAND");

	/* BAR0 through mmap (trapped loads/stores) and through pread/pwrite */
	volatile uint8_t *bar = mmap(NULL, bar0->size, PROT_READ | PROT_WRITE, MAP_SHARED, dev, bar0->offset);
	CHECK(bar != MAP_FAILED, "mmap BAR0");
	uint32_t id = *(volatile uint32_t *)(bar + ID);
	CHECK(id == 0xD0B10001, "ID via mmap 0x%x", id);
	uint32_t idp = 0;
	CHECK(pread(dev, &idp, 4, bar0->offset + ID) == 4 && idp == 0xD0B10001, "ID via pread 0x%x", idp);
	uint32_t nq = *(volatile uint32_t *)(bar + NUM_QUEUES);
	/* the load/store forms compilers emit: 64-bit, immediate stores, indexed addressing */
	volatile uint8_t *q0 = bar + Q0;
	*(volatile uint64_t *)(q0 + SQ_BASE) = IOVA;
	*(volatile uint64_t *)(q0 + CQ_BASE) = IOVA + 0x1000;
	CHECK(*(volatile uint64_t *)(q0 + CQ_BASE) == IOVA + 0x1000, "64-bit register round trip");
	*(volatile uint32_t *)(q0 + QSIZE) = 16;
	uint32_t qsize = 0;
	CHECK(pread(dev, &qsize, 4, bar0->offset + Q0 + QSIZE) == 4 && qsize == 16, "QSIZE via pread %u", qsize);
	uint32_t ctl = 3; /* enable | irq */
	CHECK(pwrite(dev, &ctl, 4, bar0->offset + Q0 + QCTRL) == 4, "QCTRL via pwrite");
	CHECK(*(volatile uint32_t *)(q0 + QCTRL) == 3, "QCTRL via mmap");
	uint64_t sib_idx = 1;
	uint32_t viasib;
	__asm__ volatile("movl 0x0(%1,%2,4), %0" : "=r"(viasib) : "r"(bar + NUM_QUEUES - 4), "r"(sib_idx) : "memory");
	CHECK(viasib == nq, "SIB-addressed load 0x%x", viasib);
	__asm__ volatile("movl $1, 0x8(%0)" : : "r"(bar) : "memory"); /* CTRL = enable: C7 /0 imm32 with disp8 */
	uint64_t r9v;
	__asm__ volatile("mov %1, %%r9\n\tmovq (%%r9), %%r10\n\tmov %%r10, %0" : "=r"(r9v) : "r"(bar + Q0 + SQ_BASE) : "r9", "r10", "memory");
	CHECK(r9v == IOVA, "REX.WRB load into r10 0x%llx", (unsigned long long)r9v);
	uint16_t lo16 = *(volatile uint16_t *)(bar + ID);
	uint8_t lo8 = *(volatile uint8_t *)(bar + ID);
	/* memory decode off: a store through the mapping gets SIGBUS, as vfio-pci's fault handler gives; decode back on */
	{
		uint16_t off = cmd & ~0x2;
		CHECK(pwrite(dev, &off, 2, cr.offset + 4) == 2, "COMMAND: memory decode off");
		CHECK(store_raises_sigbus((volatile uint32_t *)(q0 + QSIZE), 16), "a store with memory decode off did not raise SIGBUS");
		CHECK(pwrite(dev, &cmd, 2, cr.offset + 4) == 2, "COMMAND: memory decode on");
		*(volatile uint32_t *)(q0 + QSIZE) = 16; /* decodes again: stores are posted from here */
		*(volatile uint32_t *)(q0 + QSIZE) = 16;
		CHECK(*(volatile uint32_t *)(q0 + QSIZE) == 16, "store after decode on");
		printf("memory decode off: store through the mapping -> SIGBUS; decode on: stores land again\n");
	}
	printf("BAR0: ID 0x%08x (mmap) = 0x%08x (pread), %u queues, 16/8-bit reads 0x%04x/0x%02x (the device answers 32/64-bit accesses only)\n", id, idp, nq, lo16, lo8);

	/* MSI-X: vector 0 -> our eventfd, watched with epoll */
	struct vfio_irq_info irq = { .argsz = sizeof irq, .index = VFIO_PCI_MSIX_IRQ_INDEX };
	CHECK(ioctl(dev, VFIO_DEVICE_GET_IRQ_INFO, &irq) == 0 && irq.count >= 1 && (irq.flags & VFIO_IRQ_INFO_EVENTFD), "MSI-X info");
	int efd = eventfd(0, EFD_CLOEXEC | EFD_NONBLOCK);
	char sbuf[sizeof(struct vfio_irq_set) + sizeof(int)];
	struct vfio_irq_set *set = (void *)sbuf;
	*set = (struct vfio_irq_set){ .argsz = sizeof sbuf, .flags = VFIO_IRQ_SET_DATA_EVENTFD | VFIO_IRQ_SET_ACTION_TRIGGER,
				      .index = VFIO_PCI_MSIX_IRQ_INDEX, .start = 0, .count = 1 };
	memcpy(set->data, &efd, sizeof efd);
	CHECK(ioctl(dev, VFIO_DEVICE_SET_IRQS, set) == 0, "SET_IRQS MSI-X");
	int ep = epoll_create1(EPOLL_CLOEXEC);
	struct epoll_event ev = { .events = EPOLLIN, .data.u64 = 42 };
	CHECK(epoll_ctl(ep, EPOLL_CTL_ADD, efd, &ev) == 0, "epoll_ctl");

	/* a copy inside our buffer: src at +0x2000, dst at +0x3000 */
	struct desc *sq = (void *)buf;
	struct cpl *cq = (void *)(buf + 0x1000);
	for (int i = 0; i < 256; i++) buf[0x2000 + i] = (uint8_t)(i * 7 + 3);
	sq[0] = (struct desc){ IOVA + 0x2000, IOVA + 0x3000, 256, 0, 0xC0FFEE };
	*(volatile uint32_t *)(q0 + SQ_TAIL) = 1;
	struct epoll_event got;
	CHECK(epoll_wait(ep, &got, 1, 2000) == 1 && got.data.u64 == 42, "MSI-X arrives on the eventfd");
	uint64_t cnt = 0;
	CHECK(read(efd, &cnt, 8) == 8 && cnt == 1, "eventfd count %llu", (unsigned long long)cnt);
	CHECK(memcmp(buf + 0x2000, buf + 0x3000, 256) == 0, "DMA copied the bytes in our own memory");
	CHECK(cq[0].cookie == 0xC0FFEE && cq[0].status == 0 && cq[0].len == 256, "completion %llx/%u/%u",
	      (unsigned long long)cq[0].cookie, cq[0].status, cq[0].len);
	printf("DMA: 256 bytes copied by the device inside our buffer, completion written, MSI-X -> eventfd (count %llu)\n",
	       (unsigned long long)cnt);

	/* a DMA to an IOVA nobody mapped: the SMMU faults it, the device reports a write fault */
	sq[1] = (struct desc){ IOVA + 0x2000, 0x200000000ull, 64, 0, 0xBAD };
	*(volatile uint32_t *)(q0 + SQ_TAIL) = 2;
	CHECK(epoll_wait(ep, &got, 1, 2000) == 1, "completion interrupt for the faulting DMA");
	read(efd, &cnt, 8);
	CHECK(cq[1].cookie == 0xBAD && cq[1].status == 2, "faulting DMA status %u", cq[1].status);
	CHECK(*(volatile uint32_t *)(q0 + QERROR) & 1, "queue error latched");
	printf("DMA to unmapped IOVA 0x200000000: write fault reported (status %u), queue error latched\n", cq[1].status);

	/* fork: the child gets its own copy of the DMA buffer (Linux copies pinned anonymous pages for the child), so the
	   child's writes stay in the child and the device keeps writing into ours */
	{
		pid_t c = fork();
		CHECK(c >= 0, "fork");
		if (c == 0) {
			int same = memcmp(buf + 0x2000, buf + 0x3000, 256) == 0;
			memset(buf + 0x3000, 0xEE, 256);
			_exit(same ? 0 : 3);
		}
		int st = 0;
		CHECK(waitpid(c, &st, 0) == c && WIFEXITED(st) && WEXITSTATUS(st) == 0, "fork child saw the DMA'd bytes (status 0x%x)", st);
		CHECK(memcmp(buf + 0x2000, buf + 0x3000, 256) == 0, "a forked child's writes reached the parent's DMA buffer");
	}
	/* a new buffer at the same address after UNMAP_DMA + munmap: the device's DMA lands in the new memory */
	{
		struct vfio_iommu_type1_dma_unmap um = { .argsz = sizeof um, .iova = IOVA, .size = BUF };
		CHECK(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &um) == 0 && um.size == BUF, "UNMAP_DMA before munmap");
		CHECK(munmap(buf, BUF) == 0, "munmap DMA buffer");
		uint8_t *nb = mmap(buf, BUF, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
		CHECK(nb == buf, "a new buffer at the old address (%p, got %p)", (void *)buf, (void *)nb);
		for (int i = 0; i < 256; i++) buf[0x2000 + i] = (uint8_t)(i * 13 + 1);
		CHECK(ioctl(container, VFIO_IOMMU_MAP_DMA, &map) == 0, "MAP_DMA of the new buffer");
		sq[2] = (struct desc){ IOVA + 0x2000, IOVA + 0x3000, 256, 0, 0xC0FFEE2 };
		*(volatile uint32_t *)(q0 + SQ_TAIL) = 3;
		CHECK(epoll_wait(ep, &got, 1, 2000) == 1, "MSI-X for the DMA into the new buffer");
		CHECK(read(efd, &cnt, 8) == 8, "eventfd read");
		CHECK(memcmp(buf + 0x2000, buf + 0x3000, 256) == 0 && cq[2].cookie == 0xC0FFEE2 && cq[2].status == 0,
		      "DMA into the new buffer (cookie %llx status %u)", (unsigned long long)cq[2].cookie, cq[2].status);
		printf("fork: the child's writes stay in the child; a new buffer at the same address gets the device's DMA\n");
	}

	if (hold) {
		/* keep DMA going until killed (the kill -9 test) */
		printf("READY\n");
		for (uint32_t t = 3;; t++) {
			uint32_t slot = t % 16;
			sq[slot] = (struct desc){ IOVA + 0x2000, IOVA + 0x3000, 4096, 0, t };
			*(volatile uint32_t *)(q0 + SQ_TAIL) = (t + 1) % 16;
			epoll_wait(ep, &got, 1, 100);
			read(efd, &cnt, 8);
		}
	}

	if (bench) run_bench(bench, dev, container, bar, q0, bar0->offset, buf, sq, ep, efd);

	/* reset, unmap, close */
	CHECK(ioctl(dev, VFIO_DEVICE_RESET) == 0, "RESET");
	CHECK(*(volatile uint32_t *)(q0 + QCTRL) == 0 && *(volatile uint32_t *)(bar + CTRL) == 0, "registers cleared by reset");
	struct vfio_iommu_type1_dma_unmap unmap = { .argsz = sizeof unmap, .iova = IOVA, .size = BUF };
	CHECK(ioctl(container, VFIO_IOMMU_UNMAP_DMA, &unmap) == 0 && unmap.size == BUF, "UNMAP_DMA (%llu bytes)", (unsigned long long)unmap.size);
	printf("RESET: queue registers cleared; UNMAP_DMA: %llu bytes\n", (unsigned long long)unmap.size);
	CHECK(munmap((void *)bar, bar0->size) == 0, "munmap BAR0");
	close(dev);
	close(group);
	close(container);
	printf("PASS\n");
	return 0;
}
