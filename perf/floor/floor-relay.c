/*
 * floor-relay: the least a durable SMTP relay has to do, written as cheaply as C on Linux allows,
 * to measure on this machine the floor under the peers issue's targets (issue 29). It is a probe
 * for perf/, never a product: it serves only what smtp-source sends, trusts its input, and exits
 * on anything unexpected.
 *
 * What it does per message is what any relay that keeps NativeRelay's promise must do:
 *   - receive the transaction from the client (MAIL, RCPT, DATA, the body), one reply per command;
 *   - make the message durable before its 250: every message that ended in this pass of the event
 *     loop is appended to one spool file with one O_DSYNC pwrite (a group commit), and only then
 *     are their 250s sent;
 *   - forward it to the next hop over persistent connections, MAIL, RCPT and DATA pipelined, then
 *     the body, then the final reply;
 *   - record the delivery (a small record that rides on the next commit, never forcing one).
 * And nothing else: one thread, one epoll loop, no parsing beyond the command verb, no checks of
 * the mail, no header added but one fixed Received line, no dot unstuffing (the body is forwarded
 * as received), no logs, no metrics, no retries. Its CPU per message and its end-to-end rate are
 * therefore a floor for any relay with the same durability on the same machine.
 *
 * Command line (the subset of `nativerelay serve`'s that perf/ab.sh passes; others are ignored):
 *   floor-relay serve --listen IP:PORT --spool DIR --relay-to IP:PORT
 * FLOOR_CONNECTIONS (default 10): connections to the next hop. FLOOR_COMMIT_THREAD=1: the spool write on
 * a thread of its own (the loop goes on while the device works; a wake-up each way per commit). FLOOR_NO_DISK=1: skip the commit's
 * write (a relay without durability, for the forwarding-only floor).
 *
 * Build: cc -O2 -pthread -o floor-relay floor-relay.c   (perf/floor/build.sh)
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <pthread.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define SPOOL_BYTES (256L << 20) /* written with zeros at start, then reused in a circle */
#define READ_CHUNK 65536

struct conn;
void serve_input(struct conn *);
static void expect_reply(int fd);

static void die(const char *what) { perror(what); exit(1); }

typedef struct { char *p; size_t len, cap; } buf;
static void buf_add(buf *b, const void *d, size_t n) {
  if (b->len + n > b->cap) {
    size_t c = b->cap ? b->cap : 4096;
    while (c < b->len + n) c *= 2;
    if (!(b->p = realloc(b->p, c))) die("realloc");
    b->cap = c;
  }
  memcpy(b->p + b->len, d, n);
  b->len += n;
}
static void buf_drop(buf *b, size_t n) { memmove(b->p, b->p + n, b->len - n); b->len -= n; }

typedef struct msg { struct msg *next; buf env; int nrcpt; buf body; } msg;

enum kind { LISTENER, INBOUND, OUTBOUND, LANDED /* the commit thread's eventfd */ };
enum in_state { IN_CMD, IN_DATA, IN_COMMIT };
enum out_state { OUT_IDLE, OUT_ENVELOPE, OUT_FINAL };

typedef struct conn {
  enum kind kind;
  int fd, writable_armed, closing, dead;
  buf in, out;
  int state, replies_due;
  msg *m;                 /* inbound: the transaction; outbound: the job in flight */
  struct conn *next_wait; /* inbound: the list of sessions waiting for the commit */
} conn;

static int ep, spool_fd = -1, no_disk;
static off_t spool_off;
static buf commit;        /* what the next commit writes */
static int commit_due;    /* a message waits on it (delivery records alone do not force one) */
static conn *waiting;     /* sessions whose message is in `commit` */
static msg *queue_head, *queue_tail;
static conn **outs;
static int nouts;

static void watch(conn *c, int events, int op) {
  struct epoll_event e = { .events = events, .data.ptr = c };
  if (epoll_ctl(ep, op, c->fd, &e) < 0) die("epoll_ctl");
}

static void close_conn(conn *c) {
  epoll_ctl(ep, EPOLL_CTL_DEL, c->fd, NULL);
  close(c->fd);
  free(c->in.p); free(c->out.p);
  free(c);
}

/* Sends what is buffered; arms EPOLLOUT only if the socket would not take it all. */
static void flush(conn *c) {
  while (c->out.len) {
    ssize_t n = send(c->fd, c->out.p, c->out.len, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EAGAIN) break;
      if (c->kind == OUTBOUND) die("send to the next hop");
      c->out.len = 0; c->dead = 1; return;
    }
    buf_drop(&c->out, (size_t)n);
  }
  int want = c->out.len > 0;
  if (want != c->writable_armed) {
    watch(c, EPOLLIN | (want ? EPOLLOUT : 0), EPOLL_CTL_MOD);
    c->writable_armed = want;
  }
}

static void reply(conn *c, const char *s) { buf_add(&c->out, s, strlen(s)); }

static void start_job(conn *o) {
  msg *m = queue_head;
  if (!(queue_head = m->next)) queue_tail = NULL;
  o->m = m;
  o->state = OUT_ENVELOPE;
  o->replies_due = 2 + m->nrcpt; /* MAIL, each RCPT, DATA's 354 */
  buf_add(&o->out, m->env.p, m->env.len);
  reply(o, "DATA\r\n");
  flush(o);
}

/* Connections to the next hop, greeted and EHLO'd when the first message is ready (the next hop
   may start after the relay, as perf/compare.sh's does), blocking: once per run. */
static struct sockaddr_in next_hop;
static void connect_next_hop(void) {
  for (int i = 0; i < nouts; i++) {
    int fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;
    if (fd < 0 || connect(fd, (struct sockaddr *)&next_hop, sizeof next_hop) < 0) die("connect to the next hop");
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    expect_reply(fd);
    if (send(fd, "EHLO floor-relay\r\n", 18, 0) != 18) die("EHLO");
    expect_reply(fd);
    fcntl(fd, F_SETFL, O_NONBLOCK);
    conn *o = calloc(1, sizeof *o);
    o->kind = OUTBOUND; o->fd = fd; o->state = OUT_IDLE;
    outs[i] = o;
    watch(o, EPOLLIN, EPOLL_CTL_ADD);
  }
}

static void dispatch(void) {
  if (queue_head && !outs[0]) connect_next_hop();
  for (int i = 0; i < nouts && queue_head; i++)
    if (outs[i]->state == OUT_IDLE) start_job(outs[i]);
}

static void free_msg(msg *m) { free(m->env.p); free(m->body.p); free(m); }

/* The spool write of one batch: one O_DSYNC pwrite, in a circle over the pre-zeroed file. */
static void write_batch(buf *b) {
  if (no_disk) return;
  if (spool_off + (off_t)b->len > SPOOL_BYTES) spool_off = 0;
  for (size_t done = 0; done < b->len;) {
    ssize_t n = pwrite(spool_fd, b->p + done, b->len - done, spool_off + (off_t)done);
    if (n < 0) die("pwrite to the spool");
    done += (size_t)n;
  }
  spool_off += (off_t)b->len;
}

/* After a batch is durable: its messages go to the delivery queue and its sessions get their 250. */
static void batch_durable(conn *list) {
  for (conn *c = list, *next; c; c = next) {
    next = c->next_wait;
    msg *m = c->m;
    c->m = NULL;
    m->next = NULL;
    if (queue_tail) queue_tail->next = m; else queue_head = m;
    queue_tail = m;
    if (c->dead) continue;
    c->state = IN_CMD;
    reply(c, "250 2.0.0 queued\r\n");
  }
  /* Sessions may have pipelined their next commands behind the body: serve those now. */
  for (conn *c = list, *next; c; c = next) {
    next = c->next_wait;
    if (c->dead) { close_conn(c); continue; }
    serve_input(c);
    flush(c);
  }
  dispatch();
}

/* FLOOR_COMMIT_THREAD=1: the write runs on a thread of its own, so the loop goes on receiving and
   delivering while the device works; the next batch starts as soon as the last is durable. It
   costs a wake-up each way per commit. Only the loop's thread touches in_flight: a batch is in
   flight from its hand-over until the loop reads the commit thread's eventfd, so no batch's 250s
   can be sent on another batch's completion. */
static int commit_thread, done_fd, in_flight;
static int requested;       /* under flight_lock: the loop handed over a batch */
static buf flight;          /* the batch being written */
static conn *flight_waiters;
static pthread_mutex_t flight_lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t flight_start = PTHREAD_COND_INITIALIZER;

static void *committer(void *arg) {
  (void)arg;
  for (;;) {
    pthread_mutex_lock(&flight_lock);
    while (!requested) pthread_cond_wait(&flight_start, &flight_lock);
    requested = 0;
    pthread_mutex_unlock(&flight_lock);
    write_batch(&flight);
    uint64_t one = 1;
    if (write(done_fd, &one, sizeof one) != sizeof one) die("eventfd");
  }
  return NULL;
}

/* The group commit: one write for every message that ended since the last one, then their 250s. */
static void run_commit(void) {
  if (!commit_due) return;
  if (commit_thread) {
    if (in_flight) return; /* one in flight; this batch goes when it is done */
    buf t = flight; flight = commit; commit = t;
    commit.len = 0;
    commit_due = 0;
    flight_waiters = waiting;
    waiting = NULL;
    in_flight = 1;
    pthread_mutex_lock(&flight_lock);
    requested = 1;
    pthread_cond_signal(&flight_start);
    pthread_mutex_unlock(&flight_lock);
    return;
  }
  write_batch(&commit);
  commit.len = 0;
  commit_due = 0;
  conn *list = waiting;
  waiting = NULL;
  batch_durable(list);
}

/* The commit thread said its batch is durable. */
static void flight_landed(void) {
  uint64_t count;
  if (read(done_fd, &count, sizeof count) != sizeof count) die("eventfd");
  in_flight = 0;
  conn *list = flight_waiters;
  flight_waiters = NULL;
  batch_durable(list);
}

static const char received[] = "Received: from client by floor-relay; Mon, 7 Dec 2026 00:00:00 +0000\r\n";

/* Commands and body bytes from a client, as far as they go without waiting for a commit. */
void serve_input(conn *c) {
  while (c->in.len && c->state != IN_COMMIT && !c->closing) {
    if (c->state == IN_DATA) {
      msg *m = c->m;
      size_t before = m->body.len;
      buf_add(&m->body, c->in.p, c->in.len);
      size_t from = before > 4 ? before - 4 : 0;
      /* The body starts after DATA's CRLF, which body[0..1] stands for (seeded below). */
      char *end = memmem(m->body.p + from, m->body.len - from, "\r\n.\r\n", 5);
      if (!end) { c->in.len = 0; return; }
      size_t body_len = (size_t)(end - m->body.p) + 5;
      size_t extra = m->body.len - body_len;
      buf_drop(&c->in, c->in.len - extra); /* the bytes after the terminator stay as commands */
      m->body.len = body_len;
      /* Spool record: lengths, envelope, body. The body keeps its seeded CRLF; the next hop gets
         it without (see start of the body below). */
      uint32_t lens[2] = { (uint32_t)m->env.len, (uint32_t)m->body.len };
      buf_add(&commit, lens, sizeof lens);
      buf_add(&commit, m->env.p, m->env.len);
      buf_add(&commit, m->body.p, m->body.len);
      commit_due = 1;
      c->state = IN_COMMIT;
      c->next_wait = waiting;
      waiting = c;
      return;
    }
    char *eol = memchr(c->in.p, '\n', c->in.len);
    if (!eol) return;
    size_t n = (size_t)(eol - c->in.p) + 1;
    const char *l = c->in.p;
    if (!strncasecmp(l, "MAIL", 4)) {
      if (!c->m) c->m = calloc(1, sizeof(msg));
      c->m->env.len = 0; c->m->nrcpt = 0;
      buf_add(&c->m->env, l, n);
      reply(c, "250 2.1.0 Ok\r\n");
    } else if (!strncasecmp(l, "RCPT", 4) && c->m) {
      buf_add(&c->m->env, l, n);
      c->m->nrcpt++;
      reply(c, "250 2.1.5 Ok\r\n");
    } else if (!strncasecmp(l, "DATA", 4) && c->m && c->m->nrcpt) {
      c->m->body.len = 0;
      buf_add(&c->m->body, "\r\n", 2); /* so that a body of just "." is found as the end */
      buf_add(&c->m->body, received, sizeof received - 1);
      c->state = IN_DATA;
      reply(c, "354 End data with <CR><LF>.<CR><LF>\r\n");
    } else if (!strncasecmp(l, "EHLO", 4)) {
      reply(c, "250-floor-relay\r\n250 PIPELINING\r\n");
    } else if (!strncasecmp(l, "HELO", 4)) {
      reply(c, "250 floor-relay\r\n");
    } else if (!strncasecmp(l, "RSET", 4) || !strncasecmp(l, "NOOP", 4)) {
      reply(c, "250 2.0.0 Ok\r\n");
    } else if (!strncasecmp(l, "QUIT", 4)) {
      reply(c, "221 2.0.0 Bye\r\n");
      c->closing = 1;
    } else {
      reply(c, "500 5.5.2 Error\r\n");
    }
    buf_drop(&c->in, n);
  }
}

/* Replies from the next hop. */
static void serve_replies(conn *o) {
  char *eol;
  while ((eol = memchr(o->in.p, '\n', o->in.len))) {
    size_t n = (size_t)(eol - o->in.p) + 1;
    int last = n < 5 || o->in.p[3] == ' ';
    int code = atoi(o->in.p);
    buf_drop(&o->in, n);
    if (!last) continue;
    if (o->state == OUT_IDLE || code >= 400) { fprintf(stderr, "floor-relay: next hop said %d\n", code); exit(1); }
    if (--o->replies_due > 0) continue;
    if (o->state == OUT_ENVELOPE) {
      /* The body without its seeded CRLF: it ends with CRLF "." CRLF, as SMTP wants. */
      buf_add(&o->out, o->m->body.p + 2, o->m->body.len - 2);
      o->state = OUT_FINAL;
      o->replies_due = 1;
      flush(o);
    } else {
      /* Delivered: a record that rides on the next commit. */
      static const char done[] = "D";
      buf_add(&commit, done, 1);
      free_msg(o->m);
      o->m = NULL;
      o->state = OUT_IDLE;
      if (queue_head) start_job(o);
    }
  }
}

static int read_into(conn *c) {
  if (c->in.cap - c->in.len < READ_CHUNK) {
    size_t need = c->in.len + READ_CHUNK, cap = c->in.cap ? c->in.cap : READ_CHUNK;
    while (cap < need) cap *= 2;
    if (!(c->in.p = realloc(c->in.p, cap))) die("realloc");
    c->in.cap = cap;
  }
  ssize_t n = recv(c->fd, c->in.p + c->in.len, c->in.cap - c->in.len, 0);
  if (n > 0) c->in.len += (size_t)n;
  return (int)n;
}

static struct sockaddr_in parse_addr(const char *s) {
  struct sockaddr_in a = { .sin_family = AF_INET };
  char host[64];
  const char *colon = strrchr(s, ':');
  if (!colon || colon - s >= (long)sizeof host) { fprintf(stderr, "floor-relay: bad address %s\n", s); exit(2); }
  memcpy(host, s, (size_t)(colon - s)); host[colon - s] = 0;
  if (inet_pton(AF_INET, host, &a.sin_addr) != 1) { fprintf(stderr, "floor-relay: bad address %s\n", s); exit(2); }
  a.sin_port = htons((uint16_t)atoi(colon + 1));
  return a;
}

/* Reads one whole reply, blocking (only at start-up). */
static void expect_reply(int fd) {
  char line[512]; size_t len = 0;
  for (;;) {
    if (recv(fd, line + len, 1, 0) != 1) die("the next hop's greeting");
    if (line[len] == '\n') {
      if (len >= 3 && line[3] == ' ') return;
      len = 0;
    } else if (++len >= sizeof line) len = 0;
  }
}

int main(int argc, char **argv) {
  const char *listen_at = NULL, *spool_dir = NULL, *relay_to = NULL;
  for (int i = 1; i + 1 < argc; i++) {
    if (!strcmp(argv[i], "--listen")) listen_at = argv[++i];
    else if (!strcmp(argv[i], "--spool")) spool_dir = argv[++i];
    else if (!strcmp(argv[i], "--relay-to")) relay_to = argv[++i];
  }
  if (!listen_at || !spool_dir || !relay_to) { fprintf(stderr, "usage: floor-relay serve --listen IP:PORT --spool DIR --relay-to IP:PORT\n"); return 2; }
  no_disk = getenv("FLOOR_NO_DISK") && *getenv("FLOOR_NO_DISK") == '1';
  nouts = getenv("FLOOR_CONNECTIONS") ? atoi(getenv("FLOOR_CONNECTIONS")) : 10;
  if (nouts < 1) nouts = 1;
  signal(SIGPIPE, SIG_IGN);

  /* The spool: written with zeros first, so a commit overwrites allocated blocks (no metadata). */
  if (!no_disk) {
    mkdir(spool_dir, 0700);
    char path[4096];
    snprintf(path, sizeof path, "%s/floor.spool", spool_dir);
    int z = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (z < 0) die("open the spool");
    static char zeros[1 << 20];
    for (long off = 0; off < SPOOL_BYTES; off += sizeof zeros)
      if (write(z, zeros, sizeof zeros) != (ssize_t)sizeof zeros) die("zero the spool");
    if (fsync(z) < 0) die("fsync the spool");
    close(z);
    if ((spool_fd = open(path, O_WRONLY | O_DSYNC)) < 0) die("open the spool O_DSYNC");
  }

  if ((ep = epoll_create1(0)) < 0) die("epoll_create1");
  commit_thread = getenv("FLOOR_COMMIT_THREAD") && *getenv("FLOOR_COMMIT_THREAD") == '1';
  conn landed = { .kind = LANDED };
  if (commit_thread) {
    if ((done_fd = eventfd(0, 0)) < 0) die("eventfd");
    landed.fd = done_fd;
    watch(&landed, EPOLLIN, EPOLL_CTL_ADD);
    pthread_t t;
    if (pthread_create(&t, NULL, committer, NULL)) die("pthread_create");
  }

  next_hop = parse_addr(relay_to);
  outs = calloc((size_t)nouts, sizeof *outs);

  struct sockaddr_in me = parse_addr(listen_at);
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0), one = 1;
  setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
  if (bind(lfd, (struct sockaddr *)&me, sizeof me) < 0 || listen(lfd, 1024) < 0) die("listen");
  conn listener = { .kind = LISTENER, .fd = lfd };
  watch(&listener, EPOLLIN, EPOLL_CTL_ADD);

  struct epoll_event evs[256];
  for (;;) {
    /* Delivery records alone are written within 100 ms when nothing else forces a commit. */
    int n = epoll_wait(ep, evs, 256, commit.len ? 100 : -1);
    if (n < 0) { if (errno == EINTR) continue; die("epoll_wait"); }
    if (n == 0 && commit.len) commit_due = 1;
    for (int i = 0; i < n; i++) {
      conn *c = evs[i].data.ptr;
      if (c->kind == LANDED) { flight_landed(); continue; }
      if (c->kind == LISTENER) {
        int fd;
        while ((fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK)) >= 0) {
          setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
          conn *s = calloc(1, sizeof *s);
          s->kind = INBOUND; s->fd = fd; s->state = IN_CMD;
          watch(s, EPOLLIN, EPOLL_CTL_ADD);
          reply(s, "220 floor-relay ESMTP\r\n");
          flush(s);
        }
        continue;
      }
      if (evs[i].events & EPOLLOUT) flush(c);
      if (!(evs[i].events & (EPOLLIN | EPOLLHUP | EPOLLERR))) continue;
      if (c->kind == OUTBOUND) {
        if (read_into(c) <= 0 && errno != EAGAIN) die("the next hop closed");
        serve_replies(c);
        continue;
      }
      if (c->state == IN_COMMIT) {
        /* Its next command waits in the socket until the commit; an EOF marks it dead. */
        char probe;
        if (recv(c->fd, &probe, 1, MSG_PEEK) == 0) { c->dead = 1; watch(c, 0, EPOLL_CTL_MOD); }
        continue;
      }
      int got = read_into(c);
      if (got == 0 || (got < 0 && errno != EAGAIN)) {
        if (c->m) free_msg(c->m);
        close_conn(c);
        continue;
      }
      serve_input(c);
      flush(c);
      if (c->closing && !c->out.len) { if (c->m) free_msg(c->m); close_conn(c); }
      else if (c->dead) { if (c->m) free_msg(c->m); close_conn(c); }
    }
    run_commit();
  }
}
