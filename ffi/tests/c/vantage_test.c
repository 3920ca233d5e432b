/* SPDX-License-Identifier: Apache-2.0 */
/*
 * The C test of libvantage: compiled with the system gcc against include/vantage.h and the
 * built cdylib or staticlib, and run by tests/tests/ffi_c.rs (and .ci/test-ffi.sh) against a
 * real collector on loopback, also under valgrind.
 *
 *   vantage_test <mode> <config-file> <data-dir> [args...]
 *
 *   consent-off                 before consent: nothing kept, nothing written
 *   domains                     one failure per error domain, delivered, flushed
 *   host <plain-port>           host-driven mode: this program POSTs each envelope itself
 *                               (raw HTTP/1.1 to the collector's plain listener)
 *   bad-args                    null and invalid arguments give errors and messages
 *   threads <n> <millis>        n threads record concurrently; prints the counts
 *   bench <n>                   ns per vantage_agent_record call
 *   fork <n>                    records once, forks; the child is refused the parent's data
 *                               dir; parent and child (an agent of its own, data dir
 *                               <data-dir>-child) each record n failures, hosts
 *                               f-0..f-<n-1>.example.com, at the same moment, and deliver them
 *
 * Prints "ok <mode> ..." on success; any failed check prints "FAIL ..." and exits 1.
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <pthread.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "vantage.h"

#define CHECK(cond, ...)                                                                       \
    do {                                                                                       \
        if (!(cond)) {                                                                         \
            fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);                    \
            fprintf(stderr, __VA_ARGS__);                                                      \
            const char *e_ = vantage_last_error();                                             \
            fprintf(stderr, " (last error: %s)\n", e_ ? e_ : "none");                          \
            exit(1);                                                                           \
        }                                                                                      \
    } while (0)

#define EXPECT(call, want)                                                                     \
    do {                                                                                       \
        vantage_status s_ = (call);                                                            \
        CHECK(s_ == (want), "%s returned %d, expected %d", #call, (int)s_, (int)(want));       \
    } while (0)

static char *read_file(const char *path) {
    FILE *f = fopen(path, "rb");
    CHECK(f != NULL, "open %s: %s", path, strerror(errno));
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = malloc((size_t)n + 1);
    CHECK(text != NULL, "malloc");
    CHECK(fread(text, 1, (size_t)n, f) == (size_t)n, "read %s", path);
    text[n] = '\0';
    fclose(f);
    return text;
}

static double now_secs(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    nanosleep(&ts, NULL);
}

static vantage_agent *make_agent(const char *config_file, const char *data_dir, uint32_t flags) {
    char *config = read_file(config_file);
    vantage_agent *agent = NULL;
    EXPECT(vantage_agent_new(config, data_dir, flags, &agent), VANTAGE_OK);
    CHECK(agent != NULL, "no handle");
    free(config);
    return agent;
}

static vantage_failure failure(const char *service, const char *host) {
    vantage_failure f;
    memset(&f, 0, sizeof f);
    f.struct_size = sizeof f;
    f.service = service;
    f.host = host;
    return f;
}

static vantage_agent *consented_agent(const char *config_file, const char *data_dir) {
    vantage_agent *agent = make_agent(config_file, data_dir, 0);
    EXPECT(vantage_agent_set_consent(agent, true), VANTAGE_OK);
    return agent;
}

/* A failure of service "checkout" with an errno. */
static vantage_failure posix_failure(const char *host, int code) {
    vantage_failure f = failure("checkout", host);
    f.domain = "posix";
    f.code = code;
    return f;
}

static vantage_stats stats(const vantage_agent *agent) {
    vantage_stats s;
    memset(&s, 0, sizeof s);
    s.struct_size = sizeof s;
    EXPECT(vantage_agent_stats(agent, &s), VANTAGE_OK);
    return s;
}

/* ---------------------------------------------------------------------------------------- */

static int mode_consent_off(const char *config_file, const char *data_dir) {
    vantage_agent *agent = make_agent(config_file, data_dir, 0);
    vantage_failure f = failure("checkout", "posix.example.com");
    f.domain = "posix";
    f.code = ECONNREFUSED;
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_ERR_NOT_CONSENTED);
    CHECK(vantage_last_error() != NULL, "no message after NOT_CONSENTED");
    EXPECT(vantage_agent_count_success(agent, "checkout", "posix.example.com"), VANTAGE_OK);
    CHECK(vantage_last_error() == NULL, "a message after success");
    uint64_t left = 99;
    EXPECT(vantage_agent_flush(agent, 200, &left), VANTAGE_OK);
    CHECK(left == 0, "undelivered %llu", (unsigned long long)left);
    vantage_stats s = stats(agent);
    CHECK(s.recorded == 0 && s.sealed_envelopes == 0, "recorded %llu sealed %llu",
          (unsigned long long)s.recorded, (unsigned long long)s.sealed_envelopes);
    /* Consent granted and withdrawn again: everything written is deleted. */
    EXPECT(vantage_agent_set_consent(agent, true), VANTAGE_OK);
    struct stat st;
    CHECK(stat(data_dir, &st) == 0, "the data dir exists after consent");
    EXPECT(vantage_agent_set_consent(agent, false), VANTAGE_OK);
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_ERR_NOT_CONSENTED);
    vantage_agent_free(agent);
    CHECK(stat(data_dir, &st) != 0 && errno == ENOENT, "%s exists without consent", data_dir);
    printf("ok consent-off\n");
    return 0;
}

/* One failure per error domain, each on its own host, so the collector's store can be
 * checked per host by the Rust driver. */
static int mode_domains(const char *config_file, const char *data_dir) {
    vantage_agent *agent = make_agent(config_file, data_dir, 0);
    EXPECT(vantage_agent_set_consent(agent, true), VANTAGE_OK);

    vantage_failure f = failure("checkout", "https://posix.example.com/pay?card=1");
    f.domain = "posix";
    f.code = ECONNREFUSED; /* tcp.refused */
    f.elapsed_ms = 120;
    f.protocol = "http/1.1";
    f.network = "wifi";
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);

    f = failure("checkout", "gai.example.com");
    f.domain = "getaddrinfo";
    f.code = -2; /* EAI_NONAME: dns.name_not_resolved */
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);

    f = failure("checkout", "curl.example.com");
    f.domain = "curl";
    f.code = 60; /* CURLE_PEER_FAILED_VERIFICATION: tls.cert.authority_invalid */
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);

    f = failure("checkout", "nsurl.example.com");
    f.domain = "NSURLErrorDomain";
    f.code = -1001; /* NSURLErrorTimedOut: tcp.timed_out */
    f.network = "cellular";
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);

    f = failure("checkout", "java.example.com");
    f.domain = "java";
    f.exception = "java.net.UnknownHostException"; /* dns.name_not_resolved */
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);

    f = failure("checkout", "http.example.com");
    f.domain = "http";
    f.code = 503; /* http.error, status 503 */
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);

    f = failure("checkout", "label.example.com");
    f.error_type = "tls.cert.date_invalid";
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);

    uint64_t left = 99;
    EXPECT(vantage_agent_flush(agent, 20000, &left), VANTAGE_OK);
    CHECK(left == 0, "undelivered %llu", (unsigned long long)left);
    vantage_stats s = stats(agent);
    CHECK(s.recorded == 7, "recorded %llu", (unsigned long long)s.recorded);
    CHECK(s.delivered_failures == 7, "delivered %llu", (unsigned long long)s.delivered_failures);
    CHECK(s.dropped == 0, "dropped %llu", (unsigned long long)s.dropped);
    EXPECT(vantage_agent_shutdown(agent), VANTAGE_OK);
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_ERR_CLOSED);
    vantage_agent_free(agent);
    printf("ok domains delivered=%llu\n", (unsigned long long)s.delivered_failures);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Host-driven mode, with a minimal HTTP/1.1 client (one request per connection).           */

static const char *header_value(const vantage_upload *u, const char *name) {
    for (size_t i = 0; i < u->header_count; i++) {
        if (strcmp(u->headers[i].name, name) == 0) return u->headers[i].value;
    }
    return NULL;
}

static void write_all(int fd, const void *data, size_t len) {
    const char *p = data;
    while (len > 0) {
        ssize_t n = write(fd, p, len);
        CHECK(n > 0, "write: %s", strerror(errno));
        p += n;
        len -= (size_t)n;
    }
}

/* POSTs the upload to 127.0.0.1:port (the path of its URL); returns the HTTP status. */
static int post(const vantage_upload *u, int port) {
    const char *path = strstr(u->url, "://");
    CHECK(path != NULL, "url %s", u->url);
    path = strchr(path + 3, '/');
    CHECK(path != NULL, "url %s has no path", u->url);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    CHECK(fd >= 0, "socket");
    struct sockaddr_in addr;
    memset(&addr, 0, sizeof addr);
    addr.sin_family = AF_INET;
    addr.sin_port = htons((uint16_t)port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    CHECK(connect(fd, (struct sockaddr *)&addr, sizeof addr) == 0, "connect: %s", strerror(errno));
    char head[1024];
    int n = snprintf(head, sizeof head, "POST %s HTTP/1.1\r\nhost: 127.0.0.1:%d\r\n", path, port);
    write_all(fd, head, (size_t)n);
    for (size_t i = 0; i < u->header_count; i++) {
        n = snprintf(head, sizeof head, "%s: %s\r\n", u->headers[i].name, u->headers[i].value);
        write_all(fd, head, (size_t)n);
    }
    n = snprintf(head, sizeof head, "content-length: %zu\r\nconnection: close\r\n\r\n", u->body_len);
    write_all(fd, head, (size_t)n);
    write_all(fd, u->body, u->body_len);
    char response[4096];
    size_t got = 0;
    for (;;) {
        ssize_t r = read(fd, response + got, sizeof response - 1 - got);
        if (r <= 0) break;
        got += (size_t)r;
        if (got == sizeof response - 1) break;
    }
    close(fd);
    response[got] = '\0';
    int status = 0;
    CHECK(sscanf(response, "HTTP/1.1 %d", &status) == 1, "bad response: %.80s", response);
    return status;
}

static int mode_host(const char *config_file, const char *data_dir, int port) {
    vantage_agent *agent = make_agent(config_file, data_dir, VANTAGE_AGENT_HOST_DRIVEN);
    vantage_upload u;
    memset(&u, 0, sizeof u);
    u.struct_size = sizeof u;
    int64_t wake = 0;
    /* Before consent: nothing to send, nothing pending. */
    EXPECT(vantage_agent_next_upload(agent, &u), VANTAGE_NO_UPLOAD);
    EXPECT(vantage_agent_next_wakeup_ms(agent, &wake), VANTAGE_OK);
    CHECK(wake == -1, "wakeup %lld before consent", (long long)wake);
    EXPECT(vantage_agent_set_consent(agent, true), VANTAGE_OK);

    const char *hosts[3] = {"host-a.example.com", "host-b.example.com", "host-c.example.com"};
    for (int i = 0; i < 3; i++) {
        vantage_failure f = failure("checkout", hosts[i]);
        f.domain = "posix";
        f.code = ECONNRESET; /* tcp.reset */
        EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);
    }
    /* Seals to disk; delivery is ours, so do not wait. */
    uint64_t left = 0;
    EXPECT(vantage_agent_flush(agent, 0, &left), VANTAGE_ERR_TIMEOUT);
    CHECK(left >= 1, "nothing sealed");

    int failed_once = 0, posted = 0;
    double deadline = now_secs() + 20;
    while (stats(agent).delivered_failures < 3) {
        CHECK(now_secs() < deadline, "not delivered in time (posted %d)", posted);
        vantage_status s = vantage_agent_next_upload(agent, &u);
        if (s == VANTAGE_NO_UPLOAD) {
            EXPECT(vantage_agent_next_wakeup_ms(agent, &wake), VANTAGE_OK);
            CHECK(wake >= 0, "nothing pending, yet not delivered");
            /* The library asked to be polled again in `wake` ms. */
            sleep_ms(wake < 1 ? 1 : (wake > 200 ? 200 : wake));
            continue;
        }
        EXPECT(s, VANTAGE_OK);
        CHECK(strncmp(u.url, "https://127.0.0.1:", 18) == 0, "url %s", u.url);
        size_t ul = strlen(u.url);
        CHECK(ul > 13 && strcmp(u.url + ul - 13, "/v1/envelopes") == 0, "url %s", u.url);
        const char *ct = header_value(&u, "content-type");
        CHECK(ct && strcmp(ct, "application/vnd.vantage.envelope+cbor") == 0, "content-type");
        const char *sent_at = header_value(&u, "vantage-sent-at");
        CHECK(sent_at && atoll(sent_at) > 1600000000000LL, "vantage-sent-at %s", sent_at);
        CHECK(u.body != NULL && u.body_len > 64, "body of %zu bytes", u.body_len);
        if (!failed_once) {
            /* A network error first: the agent must offer the same envelope again. */
            EXPECT(vantage_agent_upload_failed(agent, u.id), VANTAGE_OK);
            EXPECT(vantage_agent_upload_failed(agent, u.id), VANTAGE_ERR_INVALID_ARGUMENT);
            failed_once = 1;
            continue;
        }
        int status = post(&u, port);
        CHECK(status == 202, "collector answered %d", status);
        posted++;
        EXPECT(vantage_agent_upload_done(agent, u.id, (uint16_t)status, -1), VANTAGE_OK);
    }
    vantage_stats s = stats(agent);
    CHECK(s.queued_envelopes == 0, "queued %llu", (unsigned long long)s.queued_envelopes);
    EXPECT(vantage_agent_flush(agent, 0, &left), VANTAGE_OK);
    /* An upload taken and never answered is freed with the agent (valgrind checks). */
    vantage_failure f = failure("checkout", "host-d.example.com");
    f.error_type = "tcp.timed_out";
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);
    EXPECT(vantage_agent_flush(agent, 0, &left), VANTAGE_ERR_TIMEOUT);
    EXPECT(vantage_agent_next_upload(agent, &u), VANTAGE_OK);
    vantage_agent_free(agent);
    printf("ok host posted=%d delivered=%llu\n", posted, (unsigned long long)s.delivered_failures);
    return 0;
}

/* ---------------------------------------------------------------------------------------- */

static int mode_bad_args(const char *config_file, const char *data_dir) {
    char *config = read_file(config_file);
    vantage_agent *agent = (vantage_agent *)0x1;
    EXPECT(vantage_agent_new(NULL, data_dir, 0, &agent), VANTAGE_ERR_INVALID_ARGUMENT);
    CHECK(agent == NULL, "out not cleared");
    CHECK(strstr(vantage_last_error(), "config") != NULL, "message: %s", vantage_last_error());
    EXPECT(vantage_agent_new(config, NULL, 0, &agent), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_new(config, data_dir, 0, NULL), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_new(config, data_dir, 0x80, &agent), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_new("collector_key = 7", data_dir, 0, &agent), VANTAGE_ERR_CONFIG);
    CHECK(vantage_last_error() != NULL, "no message");
    EXPECT(vantage_agent_new("{\"app\": [", data_dir, 0, &agent), VANTAGE_ERR_CONFIG);
    CHECK(strstr(vantage_last_error(), "JSON") != NULL, "message: %s", vantage_last_error());
    // The C library is built without the agent's `hickory-dns` feature: custom DNS servers
    // are refused with a message naming the field, never ignored.
    const char dns_line[] = "dns_servers = [\"127.0.0.1:53\"]\n";
    char *with_dns = malloc(sizeof dns_line + strlen(config));
    CHECK(with_dns != NULL, "malloc");
    memcpy(with_dns, dns_line, sizeof dns_line - 1);
    strcpy(with_dns + sizeof dns_line - 1, config);
    EXPECT(vantage_agent_new(with_dns, data_dir, 0, &agent), VANTAGE_ERR_CONFIG);
    CHECK(agent == NULL, "out not cleared");
    CHECK(strstr(vantage_last_error(), "dns_servers") != NULL, "message: %s", vantage_last_error());
    free(with_dns);
    const char bad_utf8[] = {'d', (char)0xff, 'x', 0};
    EXPECT(vantage_agent_new(config, bad_utf8, 0, &agent), VANTAGE_ERR_INVALID_ARGUMENT);
    CHECK(strstr(vantage_last_error(), "UTF-8") != NULL, "message: %s", vantage_last_error());

    vantage_failure f = failure("checkout", "posix.example.com");
    f.domain = "posix";
    f.code = ECONNREFUSED;
    EXPECT(vantage_agent_record(NULL, &f), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_set_consent(NULL, true), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_flush(NULL, 0, NULL), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_shutdown(NULL), VANTAGE_ERR_INVALID_ARGUMENT);
    vantage_agent_free(NULL);

    agent = make_agent(config_file, data_dir, 0);
    EXPECT(vantage_agent_set_consent(agent, true), VANTAGE_OK);
    EXPECT(vantage_agent_record(agent, NULL), VANTAGE_ERR_INVALID_ARGUMENT);
    vantage_failure g = f;
    g.struct_size = 8;
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    CHECK(strstr(vantage_last_error(), "struct_size") != NULL, "message: %s", vantage_last_error());
    g = f;
    g.service = NULL;
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    CHECK(strstr(vantage_last_error(), "failure.service") != NULL, "msg: %s", vantage_last_error());
    g = f;
    g.host = bad_utf8;
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.domain = "winsock-ish";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    CHECK(strstr(vantage_last_error(), "failure.domain") != NULL, "msg: %s", vantage_last_error());
    g = f;
    g.domain = NULL;
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.error_type = "tcp.refused";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.domain = "java";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.error_type = "Not A Label!";
    g.domain = NULL;
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.phase = "transport";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.protocol = "gopher";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.network = "carrier-pigeon";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.service = "Not a service id!";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    g = f;
    g.host = "";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_INVALID_ARGUMENT);
    /* A well-formed id the config does not list (a typo): an error naming it, not a new
     * service. */
    g = f;
    g.service = "chekout";
    EXPECT(vantage_agent_record(agent, &g), VANTAGE_ERR_UNKNOWN_SERVICE);
    CHECK(strstr(vantage_last_error(), "\"chekout\"") != NULL &&
              strstr(vantage_last_error(), "checkout") != NULL,
          "msg: %s", vantage_last_error());
    EXPECT(vantage_agent_count_success(agent, "chekout", "x.example.com"),
           VANTAGE_ERR_UNKNOWN_SERVICE);
    EXPECT(vantage_agent_count_success(agent, NULL, "x.example.com"), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_stats(agent, NULL), VANTAGE_ERR_INVALID_ARGUMENT);
    vantage_stats st;
    memset(&st, 0, sizeof st);
    EXPECT(vantage_agent_stats(agent, &st), VANTAGE_ERR_INVALID_ARGUMENT); /* struct_size 0 */
    CHECK(stats(agent).recorded == 0, "an invalid failure was recorded");

    /* Host-driven calls on a self-delivering agent. */
    vantage_upload u;
    memset(&u, 0, sizeof u);
    u.struct_size = sizeof u;
    EXPECT(vantage_agent_next_upload(agent, &u), VANTAGE_ERR_WRONG_MODE);
    EXPECT(vantage_agent_upload_done(agent, 1, 202, -1), VANTAGE_ERR_WRONG_MODE);
    EXPECT(vantage_agent_upload_failed(agent, 1), VANTAGE_ERR_WRONG_MODE);
    int64_t wake;
    EXPECT(vantage_agent_next_wakeup_ms(agent, &wake), VANTAGE_ERR_WRONG_MODE);
    EXPECT(vantage_agent_upload_done(agent, 1, 999, -1), VANTAGE_ERR_INVALID_ARGUMENT);

    /* A valid record still works after all that; then shut down. */
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);
    EXPECT(vantage_agent_shutdown(agent), VANTAGE_OK);
    EXPECT(vantage_agent_shutdown(agent), VANTAGE_OK);
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_ERR_CLOSED);
    EXPECT(vantage_agent_set_consent(agent, false), VANTAGE_ERR_CLOSED);
    EXPECT(vantage_agent_flush(agent, 0, NULL), VANTAGE_ERR_CLOSED);
    vantage_agent_free(agent);

    /* Host-driven agent: unknown ids and bad sizes. */
    agent = make_agent(config_file, data_dir, VANTAGE_AGENT_HOST_DRIVEN);
    EXPECT(vantage_agent_upload_done(agent, 12345, 202, -1), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_upload_failed(agent, 12345), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_next_upload(agent, NULL), VANTAGE_ERR_INVALID_ARGUMENT);
    u.struct_size = 4;
    EXPECT(vantage_agent_next_upload(agent, &u), VANTAGE_ERR_INVALID_ARGUMENT);
    EXPECT(vantage_agent_next_wakeup_ms(agent, NULL), VANTAGE_ERR_INVALID_ARGUMENT);
    vantage_agent_free(agent);

    CHECK(strlen(vantage_version()) > 0, "version");
    free(config);
    printf("ok bad-args\n");
    return 0;
}

/* ---------------------------------------------------------------------------------------- */

struct worker {
    vantage_agent *agent;
    int index;
    double until;
    unsigned long long ok, queue_full, other;
};

static void *worker_main(void *arg) {
    struct worker *w = arg;
    char host[64];
    snprintf(host, sizeof host, "t%d.example.com", w->index);
    static const int codes[4] = {ECONNREFUSED, ECONNRESET, ETIMEDOUT, EHOSTUNREACH};
    unsigned long long i = 0;
    while (now_secs() < w->until) {
        vantage_failure f = failure("checkout", host);
        f.domain = "posix";
        f.code = codes[i % 4];
        f.elapsed_ms = (uint32_t)(i % 1000);
        vantage_status s = vantage_agent_record(w->agent, &f);
        if (s == VANTAGE_OK) w->ok++;
        else if (s == VANTAGE_ERR_QUEUE_FULL) w->queue_full++;
        else w->other++;
        i++;
        /* Also a few successes and stats reads, concurrently with everything else. */
        if (i % 64 == 0) vantage_agent_count_success(w->agent, "checkout", host);
        if (i % 1024 == 0) (void)stats(w->agent);
    }
    return NULL;
}

static int mode_threads(const char *config_file, const char *data_dir, int n, long millis) {
    vantage_agent *agent = make_agent(config_file, data_dir, 0);
    EXPECT(vantage_agent_set_consent(agent, true), VANTAGE_OK);
    pthread_t threads[64];
    struct worker workers[64];
    CHECK(n > 0 && n <= 64, "1..64 threads");
    double until = now_secs() + (double)millis / 1000.0;
    for (int i = 0; i < n; i++) {
        workers[i] = (struct worker){agent, i, until, 0, 0, 0};
        CHECK(pthread_create(&threads[i], NULL, worker_main, &workers[i]) == 0, "pthread_create");
    }
    unsigned long long ok = 0, full = 0, other = 0;
    for (int i = 0; i < n; i++) {
        pthread_join(threads[i], NULL);
        ok += workers[i].ok;
        full += workers[i].queue_full;
        other += workers[i].other;
    }
    CHECK(other == 0, "%llu records failed otherwise", other);
    uint64_t left = 0;
    EXPECT(vantage_agent_flush(agent, 30000, &left), VANTAGE_OK);
    vantage_stats s = stats(agent);
    CHECK(s.recorded == ok, "agent recorded %llu, threads got OK %llu",
          (unsigned long long)s.recorded, ok);
    vantage_agent_free(agent);
    printf("ok threads n=%d ok=%llu queue_full=%llu recorded=%llu delivered=%llu dropped=%llu\n",
           n, ok, full, (unsigned long long)s.recorded, (unsigned long long)s.delivered_failures,
           (unsigned long long)s.dropped);
    return 0;
}

static int mode_bench(const char *config_file, const char *data_dir, long n) {
    vantage_agent *agent = consented_agent(config_file, data_dir);
    vantage_failure f = posix_failure("bench.example.com", ECONNREFUSED);
    unsigned long long ok = 0;
    double t0 = now_secs();
    for (long i = 0; i < n; i++) {
        if (vantage_agent_record(agent, &f) == VANTAGE_OK) ok++;
    }
    double dt = now_secs() - t0;
    vantage_agent_free(agent);
    printf("ok bench calls=%ld kept=%llu ns_per_call=%.0f\n", n, ok, dt * 1e9 / (double)n);
    return 0;
}

/* A server that recorded, then forked a worker: both record the same failures at the same
 * moments. Every one must reach the collector: the child's report ids must not repeat the
 * parent's, though it inherited the recording thread's state. An id is the millisecond and
 * random bytes, so the i-th failure of each is recorded at the same instant of the wall clock
 * (start + i * 200 us, start chosen by the parent and sent through a pipe): with the same
 * random bytes most pairs of ids would be equal, not one by chance. */
static void record_hosts(vantage_agent *agent, int n, struct timespec start) {
    char host[64];
    for (int i = 0; i < n; i++) {
        struct timespec at = start;
        long ns = at.tv_nsec + (long)i * 200000L;
        at.tv_sec += ns / 1000000000L;
        at.tv_nsec = ns % 1000000000L;
        while (clock_nanosleep(CLOCK_REALTIME, TIMER_ABSTIME, &at, NULL) == EINTR) {
        }
        snprintf(host, sizeof host, "f-%d.example.com", i);
        vantage_failure f = posix_failure(host, ECONNRESET);
        EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);
    }
}

static int mode_fork(const char *config_file, const char *data_dir, int n) {
    vantage_agent *parent = consented_agent(config_file, data_dir);
    vantage_failure f = posix_failure("before-fork.example.com", ECONNREFUSED);
    EXPECT(vantage_agent_record(parent, &f), VANTAGE_OK);
    int ready[2], go[2];
    CHECK(pipe(ready) == 0 && pipe(go) == 0, "pipe: %s", strerror(errno));
    fflush(stdout);
    pid_t pid = fork();
    CHECK(pid >= 0, "fork: %s", strerror(errno));
    char byte = 0;
    struct timespec start;
    if (pid == 0) {
        /* The child: the parent's handle has no thread here; an agent of its own, refused on
         * the parent's data dir (in use), started on one of its own. */
        char *config = read_file(config_file);
        vantage_agent *refused = NULL;
        EXPECT(vantage_agent_new(config, data_dir, 0, &refused), VANTAGE_ERR_IO);
        CHECK(refused == NULL, "a handle on a data dir in use");
        CHECK(strstr(vantage_last_error(), "another agent holds it") != NULL, "message: %s",
              vantage_last_error());
        free(config);
        char dir[4096];
        snprintf(dir, sizeof dir, "%s-child", data_dir);
        vantage_agent *child = consented_agent(config_file, dir);
        CHECK(write(ready[1], "r", 1) == 1, "write");
        CHECK(read(go[0], &start, sizeof start) == (ssize_t)sizeof start, "read");
        record_hosts(child, n, start);
        uint64_t left = 99;
        EXPECT(vantage_agent_flush(child, 30000, &left), VANTAGE_OK);
        CHECK(left == 0, "child: undelivered %llu", (unsigned long long)left);
        vantage_stats s = stats(child);
        CHECK(s.delivered_failures == (uint64_t)n, "child delivered %llu",
              (unsigned long long)s.delivered_failures);
        vantage_agent_free(child);
        printf("ok fork child delivered=%llu\n", (unsigned long long)s.delivered_failures);
        fflush(stdout);
        _exit(0);
    }
    CHECK(read(ready[0], &byte, 1) == 1, "read");
    clock_gettime(CLOCK_REALTIME, &start);
    start.tv_nsec += 20000000L; /* 20 ms from now: time for the child to read it */
    start.tv_sec += start.tv_nsec / 1000000000L;
    start.tv_nsec %= 1000000000L;
    CHECK(write(go[1], &start, sizeof start) == (ssize_t)sizeof start, "write");
    record_hosts(parent, n, start);
    uint64_t left = 99;
    EXPECT(vantage_agent_flush(parent, 30000, &left), VANTAGE_OK);
    CHECK(left == 0, "parent: undelivered %llu", (unsigned long long)left);
    int status = 0;
    CHECK(waitpid(pid, &status, 0) == pid, "waitpid: %s", strerror(errno));
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "child status %d", status);
    vantage_stats s = stats(parent);
    CHECK(s.delivered_failures == (uint64_t)n + 1, "parent delivered %llu",
          (unsigned long long)s.delivered_failures);
    vantage_agent_free(parent);
    printf("ok fork parent delivered=%llu\n", (unsigned long long)s.delivered_failures);
    return 0;
}

/* Delivery fails: the stats, the message and the log callback name the cause. */
static int log_warnings = 0;
static char last_log[512];

static void on_log(int level, const char *message, void *user_data) {
    (void)user_data;
    if (level == VANTAGE_LOG_WARN) log_warnings++;
    snprintf(last_log, sizeof last_log, "%s", message);
}

static int mode_diagnose(const char *config_file, const char *data_dir, const char *label) {
    vantage_set_log_callback(on_log, NULL);
    vantage_agent *agent = make_agent(config_file, data_dir, 0);
    EXPECT(vantage_agent_set_consent(agent, true), VANTAGE_OK);
    vantage_failure f = failure("checkout", "api.example.com");
    f.domain = "posix";
    f.code = ECONNREFUSED;
    EXPECT(vantage_agent_record(agent, &f), VANTAGE_OK);
    uint64_t left = 0;
    EXPECT(vantage_agent_flush(agent, 2500, &left), VANTAGE_ERR_TIMEOUT);
    CHECK(left == 1, "undelivered %llu", (unsigned long long)left);
    vantage_stats s = stats(agent);
    CHECK(strcmp(s.last_delivery_error, label) == 0, "last_delivery_error '%s', expected '%s'",
          s.last_delivery_error, label);
    CHECK(s.delivery_failures >= 1, "delivery_failures %llu",
          (unsigned long long)s.delivery_failures);
    /* An older caller's struct (without the new fields) still works. */
    vantage_stats old;
    memset(&old, 0x5a, sizeof old);
    old.struct_size = (uint32_t)offsetof(vantage_stats, last_delivery_error);
    EXPECT(vantage_agent_stats(agent, &old), VANTAGE_OK);
    CHECK(old.recorded == 1 && old.last_delivery_error[0] == 0x5a, "old-size stats overwritten");
    size_t needed = 0;
    EXPECT(vantage_agent_last_delivery_error(agent, NULL, 0, &needed), VANTAGE_OK);
    CHECK(needed > strlen(label), "needed %zu", needed);
    char message[512];
    EXPECT(vantage_agent_last_delivery_error(agent, message, sizeof message, &needed), VANTAGE_OK);
    CHECK(strncmp(message, label, strlen(label)) == 0, "message '%s'", message);
    CHECK(log_warnings == 1, "%d warnings logged (one per change of cause expected)",
          log_warnings);
    CHECK(strstr(last_log, label) != NULL, "log line '%s'", last_log);
    vantage_agent_free(agent);
    vantage_set_log_callback(NULL, NULL);
    printf("ok diagnose %s\n%s\n", s.last_delivery_error, message);
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: %s <mode> <config-file> <data-dir> [args]\n", argv[0]);
        return 2;
    }
    const char *mode = argv[1], *config = argv[2], *dir = argv[3];
    if (strcmp(mode, "consent-off") == 0) return mode_consent_off(config, dir);
    if (strcmp(mode, "domains") == 0) return mode_domains(config, dir);
    if (strcmp(mode, "host") == 0 && argc == 5) return mode_host(config, dir, atoi(argv[4]));
    if (strcmp(mode, "bad-args") == 0) return mode_bad_args(config, dir);
    if (strcmp(mode, "diagnose") == 0 && argc == 5) return mode_diagnose(config, dir, argv[4]);
    if (strcmp(mode, "threads") == 0 && argc == 6)
        return mode_threads(config, dir, atoi(argv[4]), atol(argv[5]));
    if (strcmp(mode, "bench") == 0 && argc == 5) return mode_bench(config, dir, atol(argv[4]));
    if (strcmp(mode, "fork") == 0 && argc == 5) return mode_fork(config, dir, atoi(argv[4]));
    fprintf(stderr, "unknown mode or wrong arguments: %s\n", mode);
    return 2;
}
