/*
 * Key -> location map: linear probing over XXH3-64 hashes, at most 70 %
 * full, with backward-shift deletion (no tombstone slots, so lookups never
 * slow down after many removes). Entries point at key bytes owned by the
 * segments, so the map costs 40 bytes per key plus slack.
 */
#include "store.h"

#include <xxhash.h>

static uint64_t key_hash(const char *key, uint32_t len)
{
    uint64_t h = XXH3_64bits(key, len);
    return h ? h : 1;
}

void tq_keymap_init(tq_keymap *m)
{
    memset(m, 0, sizeof(*m));
}

void tq_keymap_free(tq_keymap *m)
{
    tq_free(m->slots);
    memset(m, 0, sizeof(*m));
}

static tq_keymap_entry *probe(const tq_keymap *m, uint64_t h, const char *key, uint32_t len)
{
    if (!m->cap)
        return NULL;
    for (size_t i = h & (m->cap - 1);; i = (i + 1) & (m->cap - 1)) {
        tq_keymap_entry *e = &m->slots[i];
        if (e->hash == 0)
            return e;
        if (e->hash == h && e->len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
}

tq_keymap_entry *tq_keymap_find(const tq_keymap *m, const char *key, uint32_t len)
{
    tq_keymap_entry *e = probe(m, key_hash(key, len), key, len);
    return e && e->hash ? e : NULL;
}

static int rehash(tq_keymap *m, size_t cap)
{
    tq_keymap_entry *slots = tq_calloc(cap, sizeof(*slots));
    if (!slots)
        return TQ_ENOMEM;
    for (size_t i = 0; i < m->cap; i++) {
        const tq_keymap_entry *e = &m->slots[i];
        if (!e->hash)
            continue;
        size_t j = e->hash & (cap - 1);
        while (slots[j].hash)
            j = (j + 1) & (cap - 1);
        slots[j] = *e;
    }
    tq_free(m->slots);
    m->slots = slots;
    m->cap = cap;
    return TQ_OK;
}

int tq_keymap_reserve(tq_keymap *m, size_t more)
{
    size_t want = m->cap ? m->cap : 64;
    while ((m->count + more + 1) * 10 > want * 7)
        want *= 2;
    return want == m->cap ? TQ_OK : rehash(m, want);
}

int tq_keymap_put(tq_keymap *m, const char *key, uint32_t len, void *owner, uint64_t row, tq_keymap_entry *old)
{
    const uint64_t h = key_hash(key, len);
    tq_keymap_entry *e = probe(m, h, key, len);
    if (!e || (!e->hash && (m->count + 1) * 10 > m->cap * 7)) {
        if (rehash(m, m->cap ? m->cap * 2 : 64))
            return TQ_ENOMEM;
        e = probe(m, h, key, len);
    }
    if (old)
        *old = e->hash ? *e : (tq_keymap_entry){0};
    if (!e->hash)
        m->count++;
    *e = (tq_keymap_entry){.hash = h, .key = key, .len = len, .owner = owner, .row = row};
    return TQ_OK;
}

bool tq_keymap_remove(tq_keymap *m, const char *key, uint32_t len)
{
    tq_keymap_entry *e = tq_keymap_find(m, key, len);
    if (!e)
        return false;
    size_t hole = (size_t)(e - m->slots), mask = m->cap - 1;
    /* Shift back every following entry whose home slot does not lie
     * cyclically in (hole, its position]: it would become unreachable. */
    for (size_t i = (hole + 1) & mask; m->slots[i].hash; i = (i + 1) & mask) {
        size_t home = m->slots[i].hash & mask;
        bool reachable = hole <= i ? (hole < home && home <= i) : (hole < home || home <= i);
        if (!reachable) {
            m->slots[hole] = m->slots[i];
            hole = i;
        }
    }
    m->slots[hole] = (tq_keymap_entry){0};
    m->count--;
    return true;
}
