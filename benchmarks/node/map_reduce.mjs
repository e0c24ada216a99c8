// One map-reduce measurement with Node bullmq, run by benchmarks/map_reduce.py in a fresh
// process (node --expose-gc). Mirrors the Python worker of map_reduce.py: the same flow (a
// parent in queue "reduce" with N children {k} in queue "map") added by bullmq's own
// FlowProducer before timing, a warm-up round of the same shape on other queues, then the
// timed region from creating the two workers (map: concurrency C; reduce: concurrency 1) to
// the parent's "completed" event. Result printed as one JSON line on stdout.
//
//   node --expose-gc benchmarks/node/map_reduce.mjs --url redis://127.0.0.1:6379 --prefix P \
//        --n 10000 --c 50 --warmup 1000 --deadline 870
//
// Needs `npm ci` in benchmarks/ (bullmq 6.7.0, ioredis 6.0.0, pinned in package-lock.json).

import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { FlowProducer, Worker } from 'bullmq';
import IORedis from 'ioredis';

const require = createRequire(import.meta.url);

// The same names as map_reduce.py.
const MAP_Q = 'map';
const REDUCE_Q = 'reduce';
const WARM_MAP_Q = 'warm-map';
const WARM_REDUCE_Q = 'warm-reduce';

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--')) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

function flowTree(n, mapQ, reduceQ) {
  const children = new Array(n);
  for (let k = 0; k < n; k++) {
    children[k] = { name: 'map', queueName: mapQ, data: { k } };
  }
  return { name: 'reduce', queueName: reduceQ, data: { n }, children };
}

// Worker connection options from the URL (each worker opens its own connections, as the
// Python workers do).
function connectionOptions(url) {
  const u = new URL(url);
  const opts = { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
  if (u.username) opts.username = decodeURIComponent(u.username);
  if (u.password) opts.password = decodeURIComponent(u.password);
  if (u.pathname && u.pathname.length > 1) opts.db = Number(u.pathname.slice(1));
  return opts;
}

async function redisCpu(client) {
  const text = await client.info('cpu');
  const field = (name) => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text)[1]);
  return field('used_cpu_sys') + field('used_cpu_user');
}

// CPU seconds the host has been busy: user + nice + system + irq + softirq (as
// host_busy_seconds in _common.py), or null.
const CLK_TCK = 100; // USER_HZ: 100 on Linux
function hostBusySeconds() {
  try {
    const fields = readFileSync('/proc/stat', 'utf8').split('\n', 1)[0].trim().split(/\s+/);
    if (fields[0] !== 'cpu') return null;
    const t = fields.slice(1, 9).map(Number);
    return (t[0] + t[1] + t[2] + t[5] + t[6]) / CLK_TCK;
  } catch {
    return null;
  }
}

function cpuSeconds(usage) {
  return (usage.user + usage.system) / 1e6;
}

async function round(producer, info, args, n, concurrency, mapQ, reduceQ, deadline) {
  const flow = await producer.add(flowTree(n, mapQ, reduceQ));
  const parentId = flow.job.id;
  if (global.gc) global.gc();
  const connection = connectionOptions(args.url);
  const errors = [];
  let settle;
  const done = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  const timer = setTimeout(
    () => settle.reject(new Error(`the parent did not complete within ${deadline}s`)),
    deadline * 1000,
  );

  const redisCpu0 = await redisCpu(info);
  const h0 = hostBusySeconds();
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  // -- timed region --
  const mapWorker = new Worker(mapQ, async (job) => ({ n: job.data.k }), {
    connection,
    prefix: args.prefix,
    concurrency,
  });
  const reduceWorker = new Worker(
    reduceQ,
    async (job) => {
      const values = await job.getChildrenValues();
      let sum = 0;
      let count = 0;
      for (const key in values) {
        sum += values[key].n;
        count += 1;
      }
      return { sum, count };
    },
    { connection, prefix: args.prefix, concurrency: 1 },
  );
  reduceWorker.on('completed', (job, result) => {
    if (job.id === parentId) settle.resolve(result);
  });
  for (const w of [mapWorker, reduceWorker]) {
    w.on('failed', (job, err) => settle.reject(new Error(`job ${job && job.id} failed: ${err}`)));
    w.on('error', (err) => errors.push(String(err)));
  }
  let result;
  try {
    result = await done;
  } finally {
    clearTimeout(timer);
  }
  const elapsed = (performance.now() - t0) / 1000;
  const cpu = cpuSeconds(process.cpuUsage(c0));
  const h1 = hostBusySeconds();
  // -- end of timed region --
  const redisCpu1 = await redisCpu(info);
  await mapWorker.close();
  await reduceWorker.close();
  const expected = (n * (n - 1)) / 2;
  if (result.sum !== expected || result.count !== n) {
    throw new Error(
      `WRONG RESULT: the parent returned ${JSON.stringify(result)}, expected {"sum": ${expected}, "count": ${n}}`,
    );
  }
  return {
    seconds: elapsed,
    client_cpu_seconds: cpu,
    redis_cpu_seconds: redisCpu1 - redisCpu0,
    host_busy_cpu_seconds: h0 === null || h1 === null ? null : h1 - h0,
    parent_id: parentId,
    result,
    worker_errors: errors.slice(0, 5),
    worker_error_count: errors.length,
  };
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const n = Number(args.n);
  const concurrency = Number(args.c);
  const warmup = Number(args.warmup || 1000);
  const deadline = Number(args.deadline || 870);
  const producerConnection = new IORedis(args.url, { maxRetriesPerRequest: null });
  const info = new IORedis(args.url, { maxRetriesPerRequest: null });
  const producer = new FlowProducer({ connection: producerConnection, prefix: args.prefix });
  let warm;
  let out;
  try {
    warm = await round(producer, info, args, warmup, concurrency, WARM_MAP_Q, WARM_REDUCE_Q, deadline);
    out = await round(producer, info, args, n, concurrency, MAP_Q, REDUCE_Q, deadline);
  } finally {
    await producer.close();
    await producerConnection.quit();
    await info.quit();
  }
  const bullmqVersion = require('bullmq/package.json').version;
  const ioredisVersion = require('ioredis/package.json').version;
  out.warmup_seconds = warm.seconds;
  out.version = `bullmq ${bullmqVersion} (ioredis ${ioredisVersion}, node ${process.versions.node})`;
  // exit once the line is written, whatever handles a library may have left open
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
