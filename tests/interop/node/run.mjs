// Node.js side of bullfast's interop tests: drives the real `bullmq` package from a JSON spec.
//
// Usage: node run.mjs '<json spec>'    or    node run.mjs < spec.json    (also `node run.mjs -`)
//
// Spec (every field optional except `redis`):
// {
//   "redis": "redis://127.0.0.1:6379",     connection URL for every client
//   "prefix": "bull",                      key prefix of queues, workers and the flow producer
//   "timeoutMs": 20000,                    give up waiting for `until` after this long
//   "flows": [FlowJob, ...],               added with bullmq's FlowProducer before any worker
//                                          starts; the created trees are reported in `flows`
//   "queuesOptions": {...},                passed to FlowProducer.add as {queuesOptions}
//   "workers": [{
//      "queue": "A",
//      "concurrency": 1,
//      "drainDelay": 0.05,                   seconds (bullmq's default is 5)
//      "stalledInterval": 1000,
//      "options": {...},                     any other Worker option, passed as is
//      "processors": {"<job name>" | "*": Processor}
//   }],
//   "until": {
//      "jobs": [{"queue": "A", "id": "x", "state": "completed"}],
//                                          state: any bullmq state, or "finished" (completed or
//                                          failed); every listed job must reach its state
//      "count": {"queues": ["A"], "n": 3}, at least n jobs completed + failed in those queues
//      "settleMs": 0                       keep the workers running this long once met
//   },
//   "reportQueues": ["A", "B"]              queues whose jobs are reported (default: the workers'
//                                          queues and every queue named in `until` and `flows`)
//   "listConnections": ["A"]               once `until` is met, while the workers still run:
//                                          Node's queue.getWorkers(), getWorkersCount() and
//                                          getQueueEvents() of these queues, in `connections`
// }
//
// Processor (what a worker does with a job of that name; "*" matches any name):
// {
//   "sleepMs": 0,                          wait first
//   "failAttempts": 2,                     throw Error(failMessage or "attempt <n> failed")
//   "failMessage": "...",                  while job.attemptsMade < failAttempts
//   "throw": "message",                    always throw Error(message)
//   "unrecoverable": "message",            always throw UnrecoverableError(message)
//   "return": Expr,                        the job's result (evaluated when the job runs)
//   "removeUnprocessedChildren": false     call job.removeUnprocessedChildren() after
//                                          evaluating `return`
// }
// Expr: plain JSON, in which an object with a single "$..." key is evaluated:
//   {"$data": "a.b"}   a path into job.data ("" = all of it)
//   {"$job": "id"}     a job attribute (id, name, queueName, attemptsMade, attemptsStarted,
//                      parentKey, parent, timestamp, delay, priority, processedOn, opts)
//   {"$childrenValues": true}            await job.getChildrenValues()
//   {"$ignoredChildrenFailures": true}   await job.getIgnoredChildrenFailures()
//   {"$dependenciesCount": true}         await job.getDependenciesCount()
//   {"$dependencies": true}              await job.getDependencies()
//   {"$add": [a, b, ...]}, {"$mul": [a, b, ...]}, {"$concat": [a, b, ...]}
//   {"$now": true}                       Date.now() when evaluated
//   {"$literal": x}                      x, not evaluated
//
// Output: one JSON report on stdout:
// {
//   "ok": true, "timedOut": false, "startedAt": ms, "elapsedMs": n,
//   "flows": [{"queue", "id", "key", "name", "children": [...]}],
//   "processed": [{"seq", "queue", "id", "name", "attemptsMade", "attemptsStarted", "t"}],
//                                          every processor call, in the order they started
//   "jobs": [{"queue", "id", "key", "name", "data", "opts", "state", "returnvalue",
//             "failedReason", "attemptsMade", "attemptsStarted", "timestamp", "delay",
//             "priority", "processedOn", "finishedOn", "parentKey", "parent",
//             "dependenciesCount", "childrenValues", "ignoredChildrenFailures",
//             "dependencies", "runs": [seq, ...], "firstRun": seq | null}],
//                                          (childrenValues = job.getChildrenValues(),
//                                          ignoredChildrenFailures =
//                                          job.getIgnoredChildrenFailures(), dependencies =
//                                          job.getDependencies(): Node's own reading of them)
//   "unmet": [...],                        the `until` conditions not met (on timeout)
//   "errors": ["..."]                      worker 'error' events and other trouble
// }
// Exit status 0 when a report was printed (also on timeout: see `timedOut`), 2 on a bad spec
// or a crash (the reason on stderr). Once the workers are running, the line "READY" is written
// to stderr, so a caller can add jobs to idle workers.

import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { FlowProducer, Queue, UnrecoverableError, Worker } from 'bullmq';

const POLL_MS = 25;

function readSpec() {
  const arg = process.argv[2];
  const text = arg && arg !== '-' ? arg : readFileSync(0, 'utf8');
  const spec = JSON.parse(text);
  if (!spec || typeof spec !== 'object' || typeof spec.redis !== 'string') {
    throw new Error('the spec must be a JSON object with a "redis" URL');
  }
  return spec;
}

function connectionOf(spec) {
  // bullmq requires maxRetriesPerRequest null on blocking (worker) connections.
  return { url: spec.redis, maxRetriesPerRequest: null };
}

function getPath(value, path) {
  if (path === '' || path === undefined || path === null) return value;
  for (const part of String(path).split('.')) {
    if (value === null || value === undefined) return undefined;
    value = value[part];
  }
  return value;
}

const JOB_ATTRIBUTES = new Set([
  'id', 'name', 'queueName', 'attemptsMade', 'attemptsStarted', 'parentKey', 'parent',
  'timestamp', 'delay', 'priority', 'processedOn', 'opts', 'data',
]);

async function evaluate(expr, job) {
  if (Array.isArray(expr)) {
    const out = [];
    for (const item of expr) out.push(await evaluate(item, job));
    return out;
  }
  if (expr === null || typeof expr !== 'object') return expr;
  const keys = Object.keys(expr);
  if (keys.length === 1 && keys[0].startsWith('$')) {
    const op = keys[0];
    const arg = expr[op];
    switch (op) {
      case '$data':
        return getPath(job.data, arg);
      case '$job':
        if (!JOB_ATTRIBUTES.has(arg)) throw new Error(`unknown $job attribute ${arg}`);
        return job[arg] ?? null;
      case '$childrenValues':
        return await job.getChildrenValues();
      case '$ignoredChildrenFailures':
        return await job.getIgnoredChildrenFailures();
      case '$dependenciesCount':
        return await job.getDependenciesCount();
      case '$dependencies':
        return await job.getDependencies();
      case '$add':
      case '$mul': {
        const values = await evaluate(arg, job);
        return op === '$add'
          ? values.reduce((a, b) => a + b, 0)
          : values.reduce((a, b) => a * b, 1);
      }
      case '$concat':
        return (await evaluate(arg, job)).map((v) => String(v)).join('');
      case '$now':
        return Date.now();
      case '$literal':
        return arg;
      default:
        throw new Error(`unknown expression operator ${op}`);
    }
  }
  const out = {};
  for (const key of keys) out[key] = await evaluate(expr[key], job);
  return out;
}

function makeProcessor(workerSpec, state) {
  const processors = workerSpec.processors || {};
  return async (job) => {
    const seq = state.processed.length;
    state.processed.push({
      seq,
      queue: job.queueName,
      id: job.id,
      name: job.name,
      attemptsMade: job.attemptsMade,
      attemptsStarted: job.attemptsStarted,
      t: Date.now(),
    });
    const p = processors[job.name] || processors['*'];
    if (!p) throw new Error(`no processor for job name ${JSON.stringify(job.name)}`);
    if (p.sleepMs) await sleep(p.sleepMs);
    if (p.failAttempts !== undefined && job.attemptsMade < p.failAttempts) {
      throw new Error(p.failMessage || `attempt ${job.attemptsMade + 1} failed`);
    }
    if (p.unrecoverable !== undefined) throw new UnrecoverableError(p.unrecoverable);
    if (p.throw !== undefined) throw new Error(p.throw);
    const value = p.return === undefined ? null : await evaluate(p.return, job);
    if (p.removeUnprocessedChildren) await job.removeUnprocessedChildren();
    return value;
  };
}

function flowReport(node) {
  const job = node.job;
  const out = {
    queue: job.queueName,
    id: job.id,
    key: `${job.queueQualifiedName}:${job.id}`,
    name: job.name,
  };
  if (node.children && node.children.length) out.children = node.children.map(flowReport);
  return out;
}

function queuesOfFlow(flow, into) {
  into.add(flow.queueName);
  for (const child of flow.children || []) queuesOfFlow(child, into);
}

async function stateOf(queues, queueName, id) {
  return await queues.get(queueName).getJobState(id);
}

async function unmetConditions(until, queues) {
  const unmet = [];
  for (const c of until.jobs || []) {
    const state = await stateOf(queues, c.queue, c.id);
    const ok = c.state === 'finished'
      ? state === 'completed' || state === 'failed'
      : state === c.state;
    if (!ok) unmet.push({ ...c, actual: state });
  }
  if (until.count) {
    let done = 0;
    for (const q of until.count.queues) {
      const counts = await queues.get(q).getJobCounts('completed', 'failed');
      done += counts.completed + counts.failed;
    }
    if (done < until.count.n) unmet.push({ count: until.count.n, actual: done });
  }
  return unmet;
}

async function jobReport(queue, id, runs) {
  const job = await queue.getJob(id);
  if (!job) return { queue: queue.name, id, key: `${queue.qualifiedName}:${id}`, state: 'missing' };
  const seqs = runs.get(`${queue.name}\u0000${id}`) || [];
  return {
    queue: queue.name,
    id,
    key: `${queue.qualifiedName}:${id}`,
    name: job.name,
    data: job.data,
    opts: job.opts,
    state: await job.getState(),
    returnvalue: job.returnvalue ?? null,
    failedReason: job.failedReason ?? null,
    attemptsMade: job.attemptsMade,
    attemptsStarted: job.attemptsStarted,
    timestamp: job.timestamp,
    delay: job.delay,
    priority: job.priority,
    processedOn: job.processedOn ?? null,
    finishedOn: job.finishedOn ?? null,
    parentKey: job.parentKey ?? null,
    parent: job.parent ?? null,
    dependenciesCount: await job.getDependenciesCount(),
    childrenValues: await job.getChildrenValues(),
    ignoredChildrenFailures: await job.getIgnoredChildrenFailures(),
    dependencies: await job.getDependencies(),
    runs: seqs,
    firstRun: seqs.length ? seqs[0] : null,
  };
}

const STATES = ['active', 'waiting', 'waiting-children', 'prioritized', 'delayed', 'completed', 'failed'];

async function main() {
  const spec = readSpec();
  const startedAt = Date.now();
  const connection = connectionOf(spec);
  const prefix = spec.prefix || 'bull';
  const until = spec.until || {};
  const timeoutMs = spec.timeoutMs ?? 20000;
  const state = { processed: [], errors: [] };
  const report = { ok: true, timedOut: false, startedAt, flows: [] };

  const queueNames = new Set(spec.reportQueues || []);
  if (!spec.reportQueues) {
    for (const w of spec.workers || []) queueNames.add(w.queue);
    for (const c of until.jobs || []) queueNames.add(c.queue);
    for (const q of until.count?.queues || []) queueNames.add(q);
    for (const f of spec.flows || []) queuesOfFlow(f, queueNames);
  } else {
    for (const c of until.jobs || []) queueNames.add(c.queue);
    for (const q of until.count?.queues || []) queueNames.add(q);
  }
  const queues = new Map();
  for (const name of queueNames) queues.set(name, new Queue(name, { connection, prefix }));

  const closers = [];
  try {
    if (spec.flows && spec.flows.length) {
      const producer = new FlowProducer({ connection, prefix });
      closers.push(() => producer.close());
      for (const flow of spec.flows) {
        const opts = spec.queuesOptions ? { queuesOptions: spec.queuesOptions } : undefined;
        report.flows.push(flowReport(await producer.add(flow, opts)));
      }
    }

    const workers = [];
    for (const w of spec.workers || []) {
      const worker = new Worker(w.queue, makeProcessor(w, state), {
        connection,
        prefix,
        concurrency: w.concurrency ?? 1,
        drainDelay: w.drainDelay ?? 0.05,
        stalledInterval: w.stalledInterval ?? 1000,
        ...(w.options || {}),
      });
      worker.on('error', (err) => {
        const msg = `worker ${w.queue}: ${err && err.stack ? err.stack : err}`;
        state.errors.push(msg);
        process.stderr.write(`${msg}\n`);
      });
      workers.push(worker);
      closers.unshift(() => worker.close());
    }
    for (const worker of workers) await worker.waitUntilReady();
    process.stderr.write('READY\n');

    const deadline = startedAt + timeoutMs;
    let unmet = await unmetConditions(until, queues);
    while (unmet.length && Date.now() < deadline) {
      await sleep(POLL_MS);
      unmet = await unmetConditions(until, queues);
    }
    if (unmet.length) {
      report.timedOut = true;
      report.ok = false;
      report.unmet = unmet;
    } else if (until.settleMs) {
      await sleep(until.settleMs);
    }

    if (spec.listConnections) {
      report.connections = {};
      for (const name of spec.listConnections) {
        const queue = new Queue(name, { connection, prefix });
        report.connections[name] = {
          workers: (await queue.getWorkers()).map((c) => c.rawname),
          workersCount: await queue.getWorkersCount(),
          queueEvents: (await queue.getQueueEvents()).map((c) => c.rawname),
        };
        await queue.close();
      }
    }

    // Stop the workers before reading, so the report is a consistent snapshot.
    for (const worker of workers) await Promise.race([worker.close(), sleep(5000)]);

    const runs = new Map();
    for (const p of state.processed) {
      const k = `${p.queue}\u0000${p.id}`;
      if (!runs.has(k)) runs.set(k, []);
      runs.get(k).push(p.seq);
    }
    report.processed = state.processed;
    report.jobs = [];
    for (const [name, queue] of queues) {
      const ids = new Set();
      for (const job of await queue.getJobs(STATES, 0, -1, true)) if (job) ids.add(job.id);
      for (const p of state.processed) if (p.queue === name) ids.add(p.id);
      for (const c of until.jobs || []) if (c.queue === name) ids.add(c.id);
      for (const id of ids) report.jobs.push(await jobReport(queue, id, runs));
    }
    report.errors = state.errors;
    report.elapsedMs = Date.now() - startedAt;
  } finally {
    for (const close of closers) {
      try {
        await Promise.race([close(), sleep(5000)]);
      } catch (err) {
        process.stderr.write(`close: ${err}\n`);
      }
    }
    for (const queue of queues.values()) await queue.close().catch(() => {});
  }
  // a pipe is written asynchronously: exiting before the write completes truncates the report
  await new Promise((resolve) => process.stdout.write(`${JSON.stringify(report)}\n`, resolve));
}

main().then(
  () => process.exit(0),
  (err) => {
    process.stderr.write(`run.mjs failed: ${err && err.stack ? err.stack : err}\n`);
    process.exit(2);
  },
);
