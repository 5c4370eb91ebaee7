// SPDX-License-Identifier: MIT OR Apache-2.0
//
// Who sends and reads on which socket, reduced to runs in the kernel
// (docs/recorder.md, "Who sends and reads: the per-call tracepoints").
//
// BTF-typed tracepoint programs (tp_btf) on sock:sock_send_length and
// sock:sock_recv_length: the kernel calls them with the tracepoint's
// arguments (the socket, the call's result, its flags) and builds no
// record for them. Each TCP socket's runs live in socket-local storage,
// reached from the socket itself, not in a hash map. A TCP call costs its
// caller that lookup and two atomic adds; a record reaches the ring buffer
// only when a run of one process on one (socket, direction) ends and the
// next begins: another process calls, the run is older than RUN_NS, its
// process exec'd, the socket reached TCP_CLOSE, or the recorder took a
// snapshot (it bumps the epoch). A few "note" records (at most one per
// 10 ms per socket and direction) let the recorder read the caller's title
// while it sends. UDP calls are passed through one record per call: their
// binding comes from pairing each send with its thread's route lookup,
// which the recorder does as before. Socket-local storage has no key walk
// from user space: a TCP socket iterator writes the runs of one network
// namespace's sockets for the recorder's snapshots, and every record names
// its socket's namespace so that the recorder knows which to read.
// Tasks are named by their pids in the recorder's pid namespace: the
// kernel's own in the initial one, else read from the task's struct pid.
//
// Self-contained (no kernel headers, no vmlinux.h): the few kernel struct
// fields read are declared below with preserve_access_index, and the
// loader relocates their offsets against the running kernel's BTF
// (CO-RE). Built by snapshot-tool/bpf/build.sh; the object is committed
// next to this file.

typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef int __s32;

#define SEC(name) __attribute__((section(name), used))
#define INLINE static inline __attribute__((always_inline))
#define CORE __attribute__((preserve_access_index))

// BTF-defined maps (section ".maps"), as libbpf spells them.
#define __uint(name, val) int(*name)[val]
#define __type(name, val) typeof(val) *name

// Helper ids from include/uapi/linux/bpf.h (stable ABI).
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)1;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value,
                                   __u64 flags) = (void *)2;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)5;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)14;
static __u64 (*bpf_jiffies64)(void) = (void *)118;
static __u64 (*bpf_get_current_task)(void) = (void *)35;
static long (*bpf_probe_read_kernel)(void *dst, __u32 size, const void *src) = (void *)113;
static long (*bpf_seq_write)(void *m, const void *data, __u32 len) = (void *)127;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) = (void *)131;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)132;
static __u64 (*bpf_ringbuf_query)(void *ringbuf, __u64 flags) = (void *)134;
static void *(*bpf_sk_storage_get)(void *map, void *sk, void *value, __u64 flags) = (void *)107;
static long (*bpf_sk_storage_delete)(void *map, void *sk) = (void *)108;
static void *(*bpf_skc_to_tcp_sock)(void *sk) = (void *)137;

#define BPF_MAP_TYPE_ARRAY 2
#define BPF_MAP_TYPE_LRU_HASH 9
#define BPF_MAP_TYPE_SK_STORAGE 24
#define BPF_MAP_TYPE_RINGBUF 27
#define BPF_F_NO_PREALLOC 1
#define BPF_ANY 0
#define BPF_RB_NO_WAKEUP 1
#define BPF_RB_FORCE_WAKEUP 2
#define BPF_RB_AVAIL_DATA 0
#define BPF_SK_STORAGE_GET_F_CREATE 1

#define RING_BYTES (8 << 20)
#define LEVEL_UNKNOWN 0xffffffffULL
#define MAX_PID_NS_LEVEL 32
#define RUN_NS 1000000000ULL
#define NOTE_MIN_NS 10000000ULL
#define NOTE_EVERY_NS 50000000ULL

// Kinds of ring records.
#define K_CUT 1   // the old run (if any) ended, a new one began
#define K_NOTE 2  // the run's process called again (title check)
#define K_UDP 3   // one UDP call, passed through
#define K_CLOSE 4 // the old run ended at TCP_CLOSE, no new one

// The kernel fields read (relocated at load time).
#pragma clang attribute push(__attribute__((preserve_access_index)), apply_to = record)
struct ns_common {
    unsigned int inum;
};

struct net {
    struct ns_common ns;
};

typedef struct {
    struct net *net;
} possible_net_t;

struct sock_common {
    unsigned short skc_family;
    volatile unsigned char skc_state;
    possible_net_t skc_net;
};

struct sock {
    struct sock_common __sk_common;
    unsigned short sk_protocol;
};

struct pid_namespace {
    struct ns_common ns;
};

struct upid {
    int nr;
    struct pid_namespace *ns;
};

struct pid {
    unsigned int level;
    struct upid numbers[1]; // a flexible array in the kernel
};

struct task_struct {
    struct task_struct *group_leader;
    struct pid *thread_pid;
};
#pragma clang attribute pop

// The TCP iterator's context: fixed offsets, checked by the verifier.
struct seq_file;

struct bpf_iter_meta {
    struct seq_file *seq;
};

struct bpf_iter__tcp {
    struct bpf_iter_meta *meta;
    struct sock_common *sk_common;
};

// One (socket, direction): the open run and the counters.
struct run {
    __u64 key;        // the socket's address, bit 0 set for sends; 0: unused
    __u64 seq;        // bumped by whoever ends the run (compare-and-swap)
    __u64 owner;      // tgid << 32 | tid of the run's first call; 0: none
    __u64 first;      // CLOCK_MONOTONIC ns of the run's first call
    __u64 last;       // of the latest call, read at most once a tick
    __u64 bytes;      // cumulative, atomic adds
    __u64 calls;      // cumulative, atomic adds
    __u64 base_bytes; // cumulative bytes when the run began
    __u64 base_calls;
    __u64 epoch;      // the recorder's snapshot epoch when the run began
    __u64 note;       // time of the last note record
    __u64 family;     // 4 or 6
    __u64 netns;      // inode of the socket's network namespace
    __u64 tick;       // jiffies when `last` was read
};

// A socket's storage: its reads (0) and its sends (1).
struct sk_runs {
    struct run dir[2];
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
    __u32 netns;
    __u32 pad;
};

struct {
    __uint(type, BPF_MAP_TYPE_SK_STORAGE);
    __uint(map_flags, BPF_F_NO_PREALLOC);
    __type(key, int);
    __type(value, struct sk_runs);
} runs SEC(".maps");

// tgid -> time of its last exec.
struct {
    __uint(type, BPF_MAP_TYPE_LRU_HASH);
    __uint(max_entries, 65536);
    __type(key, __u32);
    __type(value, __u64);
} execs SEC(".maps");

// 0: snapshot epoch (written by the recorder), 1: the recorder's tgid,
// 2: records lost (ring full), 3: runs lost (no storage), 4: time of the
// latest exec of any process, 5: the level of the recorder's pid
// namespace (0: the initial one; LEVEL_UNKNOWN: another, whose level the
// program finds at the first call from inside it), 6: that namespace's
// inode.
struct {
    __uint(type, BPF_MAP_TYPE_ARRAY);
    __uint(max_entries, 7);
    __type(key, __u32);
    __type(value, __u64);
} conf SEC(".maps");

struct {
    __uint(type, BPF_MAP_TYPE_RINGBUF);
    __uint(max_entries, RING_BYTES);
} events SEC(".maps");

INLINE __u64 conf_get(__u32 i) {
    __u64 *v = bpf_map_lookup_elem(&conf, &i);
    return v ? *v : 0;
}

// The pid of task `t` in the pid namespace of `level` and inode `inum`;
// 0 when `t` is not in it (a task of an ancestor or a sibling namespace).
INLINE __u32 pid_in(struct task_struct *t, __u64 level, __u64 inum) {
    struct pid *p = 0;
    if (!t || bpf_probe_read_kernel(&p, sizeof(p), &t->thread_pid) || !p)
        return 0;
    unsigned int depth = 0;
    if (bpf_probe_read_kernel(&depth, sizeof(depth), &p->level) || depth < level)
        return 0;
    // numbers[level]: the array's start is relocated, an entry is
    // { int, pointer } on every 64-bit kernel.
    struct upid u = {};
    if (bpf_probe_read_kernel(&u, sizeof(u), (char *)&p->numbers[0] + level * sizeof(struct upid)))
        return 0;
    unsigned int ino = 0;
    if (!u.ns || bpf_probe_read_kernel(&ino, sizeof(ino), &u.ns->ns.inum) || ino != inum)
        return 0;
    return u.nr > 0 ? u.nr : 0;
}

// The level of the pid namespace of inode `inum` among those of task
// `t`; LEVEL_UNKNOWN when `t` is not in it. (User space cannot learn it
// from inside: the kernel names no parent namespace to a child's tasks.)
INLINE __u64 find_level(struct task_struct *t, __u64 inum) {
    struct pid *p = 0;
    unsigned int depth = 0;
    if (bpf_probe_read_kernel(&p, sizeof(p), &t->thread_pid) || !p ||
        bpf_probe_read_kernel(&depth, sizeof(depth), &p->level))
        return LEVEL_UNKNOWN;
    // Level 0 is the initial namespace: never the one looked for here.
    // (A bounded loop, checked by the verifier; not unrolled.)
#pragma clang loop unroll(disable)
    for (__u32 i = 1; i <= MAX_PID_NS_LEVEL && i <= depth; i++) {
        struct upid u = {};
        unsigned int ino = 0;
        if (bpf_probe_read_kernel(&u, sizeof(u), (char *)&p->numbers[0] + i * sizeof(struct upid)) ||
            !u.ns || bpf_probe_read_kernel(&ino, sizeof(ino), &u.ns->ns.inum))
            break;
        if (ino == inum)
            return i;
    }
    return LEVEL_UNKNOWN;
}

// The calling task as tgid << 32 | tid, both as the recorder sees them:
// in its own pid namespace, which is the host's unless it runs in a pid
// namespace of its own. 0 for a task the recorder cannot see.
INLINE __u64 current_pid_tgid(void) {
    __u32 k = 5;
    __u64 *lv = bpf_map_lookup_elem(&conf, &k);
    if (!lv)
        return 0;
    __u64 level = *lv;
    if (level == 0)
        return bpf_get_current_pid_tgid();
    __u64 inum = conf_get(6);
    struct task_struct *t = (struct task_struct *)bpf_get_current_task();
    if (level == LEVEL_UNKNOWN) {
        level = find_level(t, inum);
        if (level == LEVEL_UNKNOWN)
            return 0;
        *lv = level;
    }
    if (level > MAX_PID_NS_LEVEL)
        return 0;
    struct task_struct *leader = 0;
    if (bpf_probe_read_kernel(&leader, sizeof(leader), &t->group_leader))
        return 0;
    __u32 tid = pid_in(t, level, inum);
    __u32 tgid = pid_in(leader, level, inum);
    return tid && tgid ? (__u64)tgid << 32 | tid : 0;
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

// Stores the address of `sk`, with `bit` or'ed in, at `*dst`. A typed
// socket pointer admits no bit operation: it is stored as it is (allowed
// to a privileged program), read back as a number, then or'ed.
INLINE void put_key(volatile __u64 *dst, struct sock *sk, __u64 bit) {
    *dst = (__u64)sk;
    asm volatile("" ::: "memory");
    *dst = *dst | bit;
}

// Fills the old run's part of a record from `v` (caller won the seq).
INLINE void old_run(struct rec *r, struct run *v, __u64 bytes, __u64 calls) {
    r->old_owner = calls > v->base_calls ? v->owner : 0;
    r->old_first = v->first;
    r->old_last = v->last;
    r->old_bytes = bytes - v->base_bytes;
    r->old_calls = calls - v->base_calls;
}

// One call written at once as a record of its own: a UDP call passed
// through (K_UDP, `udp`), or a TCP read after TCP_CLOSE as a run of one
// call (K_CLOSE).
INLINE void one_call(struct sock *sk, __u64 send, __u16 family, int udp, __u64 pt, int ret,
                     __u64 now) {
    struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
    if (!r) {
        count_lost(2);
        return;
    }
    put_key(&r->key, sk, send);
    r->kind = udp ? K_UDP : K_CLOSE;
    r->family = family == 2 ? 4 : 6;
    r->proto = udp ? 17 : 6;
    r->old_owner = udp ? 0 : pt;
    r->old_first = udp ? 0 : now;
    r->old_last = udp ? 0 : now;
    r->old_bytes = (__u64)ret;
    r->old_calls = 1;
    r->owner = udp ? pt : 0;
    r->time = now;
    r->netns = sk->__sk_common.skc_net.net->ns.inum;
    r->pad = 0;
    bpf_ringbuf_submit(r, wake_flags());
}

INLINE int on_call(struct sock *sk, int ret, int flags, __u64 send) {
    if (!sk || ret <= 0)
        return 0;
    __u16 family = sk->__sk_common.skc_family;
    if (family != 2 && family != 10)
        return 0;
    if (!send && (flags & 2))
        return 0; // MSG_PEEK
    __u16 proto = sk->sk_protocol;
    if (proto != 6 && proto != 17)
        return 0;
    __u64 pt = current_pid_tgid();
    __u32 tgid = pt >> 32;
    if (tgid == 0 || tgid == (__u32)conf_get(1))
        return 0;
    if (proto == 17) {
        one_call(sk, send, family, 1, pt, ret, bpf_ktime_get_ns());
        return 0;
    }
    if (sk->__sk_common.skc_state == 7) {
        // A read after TCP_CLOSE (the rest of the receive queue): a run
        // of one call, written at once; no storage for a closed socket.
        one_call(sk, send, family, 0, pt, ret, bpf_ktime_get_ns());
        return 0;
    }
    struct sk_runs *s = bpf_sk_storage_get(&runs, sk, 0, BPF_SK_STORAGE_GET_F_CREATE);
    if (!s) {
        count_lost(3);
        return 0;
    }
    struct run *v = &s->dir[send];
    if (v->key == 0) {
        v->family = family == 2 ? 4 : 6;
        v->netns = sk->__sk_common.skc_net.net->ns.inum;
        put_key(&v->key, sk, send);
    }
    __u64 key = v->key;
    __u64 epoch = conf_get(0);
    __u64 owner = v->owner;
    __u64 first = v->first;
    // The clock is read at most once per clock tick and run (it is the
    // dearest part of a call on a virtual machine): a call in the same
    // tick as the run's previous reading reuses that reading, so `last`
    // may be up to one tick early. A run's first call always reads it.
    __u64 tick = bpf_jiffies64();
    __u64 ticks = tick - v->tick;
    int fresh = ticks != 0;
    __u64 now = fresh ? bpf_ktime_get_ns() : v->last;
    int cut = owner == 0 || (__u32)(owner >> 32) != tgid || now - first > RUN_NS || v->epoch != epoch;
    // The per-process exec time is looked up only when some process
    // exec'd since the run began (an array read, not a hash lookup, on
    // most calls).
    if (!cut && conf_get(4) > first) {
        __u64 *x = bpf_map_lookup_elem(&execs, &tgid);
        cut = x && *x > first;
    }
    if (cut) {
        if (!fresh) {
            now = bpf_ktime_get_ns();
            fresh = 1;
        }
        __u64 seq = v->seq;
        if (__sync_val_compare_and_swap(&v->seq, seq, seq + 1) == seq) {
            __u64 bytes = v->bytes;
            __u64 calls = v->calls;
            struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
            if (r) {
                r->key = key;
                r->kind = K_CUT;
                r->family = v->family;
                r->proto = 6;
                old_run(r, v, bytes, calls);
                r->owner = pt;
                r->time = now;
                r->netns = v->netns;
                r->pad = 0;
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
    } else if (fresh && now - v->note >= NOTE_MIN_NS &&
               (ticks >= 2 || now - v->note >= NOTE_EVERY_NS)) {
        // A note when the process calls again after a whole tick without
        // a call on this run, or every NOTE_EVERY_NS while it keeps on.
        v->note = now;
        struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
        if (r) {
            r->key = key;
            r->kind = K_NOTE;
            r->family = v->family;
            r->proto = 6;
            r->old_owner = 0;
            r->old_first = 0;
            r->old_last = 0;
            r->old_bytes = 0;
            r->old_calls = 0;
            r->owner = pt;
            r->time = now;
            r->netns = v->netns;
            r->pad = 0;
            bpf_ringbuf_submit(r, wake_flags());
        }
        // A lost note costs only a title check.
    }
    __sync_fetch_and_add(&v->bytes, (__u64)ret);
    __sync_fetch_and_add(&v->calls, 1);
    if (fresh) {
        v->tick = tick;
        if (now > v->last)
            v->last = now;
    }
    return 0;
}

// tp_btf programs get the tracepoint's arguments as an array of u64:
// sock_{send,recv}_length(struct sock *sk, int ret, int flags).

SEC("tp_btf/sock_send_length")
int sock_send(__u64 *ctx) { return on_call((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], 1); }

SEC("tp_btf/sock_recv_length")
int sock_recv(__u64 *ctx) { return on_call((struct sock *)ctx[0], (int)ctx[1], (int)ctx[2], 0); }

INLINE void close_dir(struct run *v, __u64 now) {
    __u64 seq = v->seq;
    if (v->key == 0 || __sync_val_compare_and_swap(&v->seq, seq, seq + 1) != seq)
        return;
    __u64 bytes = v->bytes;
    __u64 calls = v->calls;
    if (calls <= v->base_calls)
        return;
    struct rec *r = bpf_ringbuf_reserve(&events, sizeof(struct rec), 0);
    if (!r) {
        count_lost(2);
        return;
    }
    r->key = v->key;
    r->kind = K_CLOSE;
    r->family = v->family;
    r->proto = 6;
    old_run(r, v, bytes, calls);
    r->owner = 0;
    r->time = now;
    r->netns = v->netns;
    r->pad = 0;
    bpf_ringbuf_submit(r, wake_flags());
}

// A TCP socket reaching CLOSE ends its runs, and its storage goes: a run
// never spans two connections (a socket may connect again after CLOSE).
// inet_sock_set_state(const struct sock *sk, int oldstate, int newstate).
SEC("tp_btf/inet_sock_set_state")
int sock_state(__u64 *ctx) {
    struct sock *sk = (struct sock *)ctx[0];
    if (!sk || (int)ctx[2] != 7 || sk->sk_protocol != 6)
        return 0;
    struct sk_runs *s = bpf_sk_storage_get(&runs, sk, 0, 0);
    if (!s)
        return 0;
    __u64 now = bpf_ktime_get_ns();
    close_dir(&s->dir[0], now);
    close_dir(&s->dir[1], now);
    bpf_sk_storage_delete(&runs, sk);
    return 0;
}

// An exec ends the runs of its process at their next call: a run never
// spans two programs. (A plain tracepoint: execs are rare.)
SEC("tracepoint/sched/sched_process_exec")
int process_exec(void *ctx) {
    __u32 tgid = current_pid_tgid() >> 32;
    __u64 now = bpf_ktime_get_ns();
    if (tgid)
        bpf_map_update_elem(&execs, &tgid, &now, BPF_ANY);
    __u32 k = 4;
    __u64 *last = bpf_map_lookup_elem(&conf, &k);
    if (last)
        *last = now;
    return 1;
}

// The snapshot's read of the runs of one network namespace (the one the
// reader was in when it opened the iterator): every TCP socket's storage
// as it stands, one struct sk_runs per socket, written in binary.
// (Socket-local storage has no key walk of its own from user space.)
SEC("iter/tcp")
int dump_runs(struct bpf_iter__tcp *ctx) {
    struct sock_common *skc = ctx->sk_common;
    if (!skc)
        return 0;
    struct sock *sk = bpf_skc_to_tcp_sock(skc);
    if (!sk)
        return 0;
    struct sk_runs *v = bpf_sk_storage_get(&runs, sk, 0, 0);
    if (v)
        bpf_seq_write(ctx->meta->seq, v, sizeof(*v));
    return 0;
}

char _license[] SEC("license") = "Dual MIT/GPL";
