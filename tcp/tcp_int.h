/* tcp/ internal definitions shared by the stack's own source files only.
 * Not part of the public API (tcp.h is). */
#ifndef MXEDGE_TCP_INT_H
#define MXEDGE_TCP_INT_H

#include <stdint.h>
#include "tcp.h"

#define SEQ_LT(a, b)  ((int32_t)((uint32_t)(a) - (uint32_t)(b)) < 0)
#define SEQ_LEQ(a, b) ((int32_t)((uint32_t)(a) - (uint32_t)(b)) <= 0)
#define SEQ_GT(a, b)  SEQ_LT(b, a)
#define SEQ_GEQ(a, b) SEQ_LEQ(b, a)

/* SipHash-2-4 of len bytes with a 128-bit key (RFC 6528 wants a keyed PRF
 * for ISNs; SipHash is the usual choice). */
uint64_t tcp_siphash(const uint8_t key[16], const void *data, size_t len);

/* Internet checksum helpers (RFC 1071). */
uint32_t tcp_csum_add(uint32_t sum, const void *data, size_t len);
uint16_t tcp_csum_fold(uint32_t sum);

#endif
