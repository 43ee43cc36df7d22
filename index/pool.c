/*
 * A process-wide pool of worker threads for splitting one call's work into
 * parts (search splits its blocks). Workers start on first need, up to the
 * most parts any call has asked for (capped at TQ_MAX_THREADS - 1), and then
 * stay, so a query never pays for thread start-up.
 *
 * tq_pool_run(nparts, fn, arg) runs fn(arg, part) for every part in
 * [0, nparts) and returns when all are done; the calling thread works on its
 * own job's parts too, so a call makes progress even when every worker is
 * busy with other calls' jobs. Any number of threads may call it at once:
 * jobs wait in a list and workers take parts from the oldest job first.
 *
 * Locking: pool.lock guards the job list, every job's next/done counters and
 * the worker count. Parts run without the lock.
 */
#include "tq_index.h"

typedef struct pool_job {
    tq_pool_fn fn;
    void *arg;
    unsigned nparts;
    unsigned next;          /* next part to hand out */
    unsigned done;          /* parts finished */
    pthread_cond_t finished;
    struct pool_job *link;  /* in the list while parts remain to hand out */
} pool_job;

static struct {
    pthread_mutex_t lock;
    pthread_cond_t work;
    pool_job *jobs;         /* oldest first */
    unsigned workers;
    pthread_t tid[TQ_MAX_THREADS];
} pool = {.lock = PTHREAD_MUTEX_INITIALIZER, .work = PTHREAD_COND_INITIALIZER};

/* Take the next part of the oldest job with parts left; unlinks a job once
 * its last part is handed out. Called with the lock held. */
static pool_job *take_part_nolock(unsigned *part)
{
    pool_job *job = pool.jobs;
    if (!job)
        return NULL;
    *part = job->next++;
    if (job->next == job->nparts)
        pool.jobs = job->link;
    return job;
}

static void finish_part_nolock(pool_job *job)
{
    if (++job->done == job->nparts)
        pthread_cond_signal(&job->finished);
}

static void *worker_main(void *unused)
{
    (void)unused;
    pthread_mutex_lock(&pool.lock);
    for (;;) {
        unsigned part;
        pool_job *job = take_part_nolock(&part);
        if (!job) {
            pthread_cond_wait(&pool.work, &pool.lock);
            continue;
        }
        pthread_mutex_unlock(&pool.lock);
        job->fn(job->arg, part);
        pthread_mutex_lock(&pool.lock);
        finish_part_nolock(job);
    }
    return NULL;
}

void tq_pool_run(unsigned nparts, tq_pool_fn fn, void *arg)
{
    if (nparts == 0)
        return;
    if (nparts == 1) {
        fn(arg, 0);
        return;
    }
    pool_job job = {.fn = fn, .arg = arg, .nparts = nparts};
    pthread_cond_init(&job.finished, NULL);
    pthread_mutex_lock(&pool.lock);
    unsigned want = nparts - 1 < TQ_MAX_THREADS - 1 ? nparts - 1 : TQ_MAX_THREADS - 1;
    while (pool.workers < want) {
        /* A worker that cannot start only means less parallelism: the
         * caller still runs every part itself if it must. */
        if (pthread_create(&pool.tid[pool.workers], NULL, worker_main, NULL) != 0)
            break;
        pthread_detach(pool.tid[pool.workers]);
        pool.workers++;
    }
    pool_job **tail = &pool.jobs;
    while (*tail)
        tail = &(*tail)->link;
    *tail = &job;
    pthread_cond_broadcast(&pool.work);
    /* Work on our own job until its parts are all handed out. */
    while (job.next < job.nparts) {
        unsigned part = job.next++;
        if (job.next == job.nparts) {
            pool_job **p = &pool.jobs;
            while (*p != &job)
                p = &(*p)->link;
            *p = job.link;
        }
        pthread_mutex_unlock(&pool.lock);
        fn(arg, part);
        pthread_mutex_lock(&pool.lock);
        finish_part_nolock(&job);
    }
    while (job.done < job.nparts)
        pthread_cond_wait(&job.finished, &pool.lock);
    pthread_mutex_unlock(&pool.lock);
    pthread_cond_destroy(&job.finished);
}
