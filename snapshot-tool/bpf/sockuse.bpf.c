// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Who sends and reads on which socket, reduced to runs in the kernel
// (docs/recorder.md, "Who sends and reads: the per-call tracepoints").
//
// Attached (through a counting perf event, not a sampling one) to
// sock:sock_send_length and sock:sock_recv_length. A TCP call
// costs the caller a map lookup and two atomic adds; a record reaches the
// ring buffer only when a run of one process on one (socket, direction)
// ends and the next begins: another process calls, the run is older than
// RUN_NS, its process exec'd, the socket reached TCP_CLOSE, or the
// recorder took a snapshot (it bumps the epoch). A few "note" records
// (at most one per 10 ms per socket and direction) let the recorder read
// the caller's title while it sends. UDP calls are passed through one
// record per call: their binding comes from pairing each send with its
// thread's route lookup, which the recorder does as before.
//
// Self-contained (no kernel headers, no vmlinux.h): the tracepoint
// records' layouts are those of the tracefs format files, which have not
// changed since the tracepoints were added (Linux 6.3). Built by
// snapshot-tool/bpf/build.sh; the object is committed next to this file.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;

#define SEC(name) __attribute__((section(name), used))
#define INLINE static inline __attribute__((always_inline))

// Helper ids from include/uapi/linux/bpf.h (stable ABI).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)2;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)3;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;

#define BPF_MAP_TYPE_HASH 1
#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_F_NO_PREALLOC 1
#define BPF_NOEXIST 1
#define BPF_ANY 0
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0

// Legacy map definitions (section "maps"), read by the loader.
struct bpf_map_def {
    __u32 type;
    __u32 key_size;
    __u32 value_size;
    __u32 max_entries;
    __u32 map_flags;
};

#define RING_BYTES (8 << 20)
#define RUN_NS 1000000000ULL
#define NOTE_MIN_NS 10000000ULL
#define NOTE_GAP_NS 2000000ULL
#define NOTE_EVERY_NS 50000000ULL

// Kinds of ring records.
#define K_CUT 1   // the old run (if any) ended, a new one began
#define K_NOTE 2  // the run's process called again (title check)
#define K_UDP 3   // one UDP call, passed through
#define K_CLOSE 4 // the old run ended at TCP_CLOSE, no new one

// Per (socket, direction): the open run and the counters. Key: the
// socket's address with bit 0 set for sends (a struct sock is at least
// 8-byte aligned).
struct run {
    __u64 seq;        // bumped by whoever ends the run (compare-and-swap)
    __u64 owner;      // tgid << 32 | tid of the run's first call; 0: none
    __u64 first;      // CLOCK_MONOTONIC ns of the run's first call
    __u64 last;       // of the latest call
    __u64 bytes;      // cumulative, atomic adds
    __u64 calls;      // cumulative, atomic adds
    __u64 base_bytes; // cumulative bytes when the run began
    __u64 base_calls;
    __u64 epoch;      // the recorder's snapshot epoch when the run began
    __u64 note;       // time of the last note record
    __u64 family;     // 4 or 6
};

struct rec {
    __u64 key;
    __u32 kind;
    __u16 family;
    __u16 proto;
    __u64 old_owner;
    __u64 old_first;
    __u64 old_last;
    __u64 old_bytes;
    __u64 old_calls;
    __u64 owner;
    __u64 time;
};

struct bpf_map_def SEC("maps") runs = {
    .type = BPF_MAP_TYPE_HASH,
    .key_size = 8,
    .value_size = sizeof(struct run),
    .max_entries = 262144,
    .map_flags = BPF_F_NO_PREALLOC,
};

// tgid -> time of its last exec.
struct bpf_map_def SEC("maps") execs = {
    .type = BPF_MAP_TYPE_LRU_HASH,
    .key_size = 4,
    .value_size = 8,
    .max_entries = 65536,
    .map_flags = 0,
};

// 0: snapshot epoch (written by the recorder), 1: the recorder's tgid,
// 2: records lost (ring full), 3: runs lost (map full), 4: time of the
// latest exec of any process.
struct bpf_map_def SEC("maps") conf = {
    .type = BPF_MAP_TYPE_ARRAY,
    .key_size = 4,
    .value_size = 8,
    .max_entries = 5,
    .map_flags = 0,
};

struct bpf_map_def SEC("maps") events = {
    .type = BPF_MAP_TYPE_RINGBUF,
    .key_size = 0,
    .value_size = 0,
    .max_entries = RING_BYTES,
    .map_flags = 0,
};

// sock:sock_send_length / sock_recv_length record. The kernel overwrites
// the first 8 bytes (the common fields) with a pointer before it runs a
// BPF program: they are not read. The calls run in process context (the
// socket's sendmsg/recvmsg), never in an interrupt.
struct len_ctx {
    __u16 common_type;
    __u8 common_flags;
    __u8 common_preempt_count;
    __s32 common_pid;
    __u64 sk;
    __u16 family;
    __u16 protocol;
    __s32 ret;
    __s32 flags;
};

// sock:inet_sock_set_state record (the fields used).
struct state_ctx {
    __u64 common;
    __u64 skaddr;
    __s32 oldstate;
    __s32 newstate;
    __u16 sport;
    __u16 dport;
    __u16 family;
    __u16 protocol;
};

INLINE __u64 conf_get(__u32 i) {
    __u64 *v = bpf_map_lookup_elem(&conf, &i);
    return v ? *v : 0;
}

INLINE void count_lost(__u32 i) {
    __u64 *v = bpf_map_lookup_elem(&conf, &i);
    if (v)
        __sync_fetch_and_add(v, 1);
}

INLINE __u64 wake_flags(void) {
    return bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) > RING_BYTES / 4 ? BPF_RB_FORCE_WAKEUP
                                                                          : BPF_RB_NO_WAKEUP;
}

// Fills the old run's part of a record from `v` (caller won the seq).
INLINE void old_run(struct rec *r, struct run *v, __u64 bytes, __u64 calls) {
    r->old_owner = calls > v->base_calls ? v->owner : 0;
    r->old_first = v->first;
    r->old_last = v->last;
    r->old_bytes = bytes - v->base_bytes;
    r->old_calls = calls - v->base_calls;
}

INLINE int on_call(struct len_ctx *ctx, __u64 send) {
    __u16 family = ctx->family;
    if ((family != 2 && family != 10) || ctx->ret <= 0)
        return 1;
    if (!send && (ctx->flags & 2))
        return 1; // MSG_PEEK
    __u16 proto = ctx->protocol;
    if (proto != 6 && proto != 17)
        return 1;
    __u64 pt = bpf_get_current_pid_tgid();
    __u32 tgid = pt >> 32;
    if (tgid == 0 || tgid == (__u32)conf_get(1))
        return 1;
    __u64 now = bpf_ktime_get_ns();
    __u64 key = ctx->sk | send;
    __u64 ret = (__u64)ctx->ret;
    if (proto == 17) {
        struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
        if (!r) {
            count_lost(2);
            return 1;
        }
        r->key = key;
        r->kind = K_UDP;
        r->family = family == 2 ? 4 : 6;
        r->proto = 17;
        r->old_owner = 0;
        r->old_first = 0;
        r->old_last = 0;
        r->old_bytes = ret;
        r->old_calls = 1;
        r->owner = pt;
        r->time = now;
        bpf_ringbuf_submit(r, wake_flags());
        return 1;
    }
    struct run *v = bpf_map_lookup_elem(&runs, &key);
    if (!v) {
        struct run z = {};
        z.family = family == 2 ? 4 : 6;
        bpf_map_update_elem(&runs, &key, &z, BPF_NOEXIST);
        v = bpf_map_lookup_elem(&runs, &key);
        if (!v) {
            count_lost(3);
            return 1;
        }
    }
    __u64 epoch = conf_get(0);
    __u64 owner = v->owner;
    __u64 first = v->first;
    __u64 prev = v->last;
    int cut = owner == 0 || (__u32)(owner >> 32) != tgid || now - first > RUN_NS || v->epoch != epoch;
    // The per-process exec time is looked up only when some process
    // exec'd since the run began (an array read, not a hash lookup, on
    // most calls).
    if (!cut && conf_get(4) > first) {
        __u64 *x = bpf_map_lookup_elem(&execs, &tgid);
        cut = x && *x > first;
    }
    if (cut) {
        __u64 seq = v->seq;
        if (__sync_val_compare_and_swap(&v->seq, seq, seq + 1) == seq) {
            __u64 bytes = v->bytes;
            __u64 calls = v->calls;
            struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
            if (r) {
                r->key = key;
                r->kind = K_CUT;
                r->family = family == 2 ? 4 : 6;
                r->proto = 6;
                old_run(r, v, bytes, calls);
                r->owner = pt;
                r->time = now;
                bpf_ringbuf_submit(r, wake_flags());
            } else {
                count_lost(2);
            }
            v->base_bytes = bytes;
            v->base_calls = calls;
            v->owner = pt;
            v->first = now;
            v->epoch = epoch;
            v->note = now;
        }
    } else if (now - v->note >= NOTE_MIN_NS &&
               (now - prev >= NOTE_GAP_NS || now - v->note >= NOTE_EVERY_NS)) {
        v->note = now;
        struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
        if (r) {
            r->key = key;
            r->kind = K_NOTE;
            r->family = family == 2 ? 4 : 6;
            r->proto = 6;
            r->old_owner = 0;
            r->old_first = 0;
            r->old_last = 0;
            r->old_bytes = 0;
            r->old_calls = 0;
            r->owner = pt;
            r->time = now;
            bpf_ringbuf_submit(r, wake_flags());
        }
        // A lost note costs only a title check.
    }
    __sync_fetch_and_add(&v->bytes, ret);
    __sync_fetch_and_add(&v->calls, 1);
    if (now > v->last)
        v->last = now;
    return 1;
}

// Every program returns 1: the tracepoint's perf samples, if another tool
// asked for them, are still written (0 would suppress them for everyone).

SEC("tracepoint/sock/sock_send_length")
int sock_send(struct len_ctx *ctx) { return on_call(ctx, 1); }

SEC("tracepoint/sock/sock_recv_length")
int sock_recv(struct len_ctx *ctx) { return on_call(ctx, 0); }

INLINE void close_dir(__u64 key, __u16 family, __u64 now) {
    struct run *v = bpf_map_lookup_elem(&runs, &key);
    if (!v)
        return;
    __u64 seq = v->seq;
    if (__sync_val_compare_and_swap(&v->seq, seq, seq + 1) == seq) {
        __u64 bytes = v->bytes;
        __u64 calls = v->calls;
        if (calls > v->base_calls) {
            struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
            if (r) {
                r->key = key;
                r->kind = K_CLOSE;
                r->family = family == 2 ? 4 : 6;
                r->proto = 6;
                old_run(r, v, bytes, calls);
                r->owner = 0;
                r->time = now;
                bpf_ringbuf_submit(r, wake_flags());
            } else {
                count_lost(2);
            }
        }
    }
    bpf_map_delete_elem(&runs, &key);
}

// A TCP socket reaching CLOSE ends its runs: its address may come back for
// a new socket, and a run never spans two sockets.
SEC("tracepoint/sock/inet_sock_set_state")
int sock_state(struct state_ctx *ctx) {
    if (ctx->protocol != 6 || ctx->newstate != 7)
        return 1;
    __u64 now = bpf_ktime_get_ns();
    close_dir(ctx->skaddr, ctx->family, now);
    close_dir(ctx->skaddr | 1, ctx->family, now);
    return 1;
}

// An exec ends the runs of its process at their next call: a run never
// spans two programs.
SEC("tracepoint/sched/sched_process_exec")
int process_exec(void *ctx) {
    __u32 tgid = bpf_get_current_pid_tgid() >> 32;
    __u64 now = bpf_ktime_get_ns();
    bpf_map_update_elem(&execs, &tgid, &now, BPF_ANY);
    __u32 k = 4;
    __u64 *last = bpf_map_lookup_elem(&conf, &k);
    if (last)
        *last = now;
    return 1;
}

char _license[] SEC("license") = "Dual MIT/GPL";
