// One measurement of `bullfast bench` with Node bullmq, in a fresh process (node --expose-gc).
// Mirrors benchmarks/runner.py: the same scenarios, inputs, queue names, warm-up and timed
// regions; the result is one JSON line on stdout, a wrong result exits with status 1.
//
//   node --expose-gc benchmarks/node/bench.mjs --scenario S --n N --c C \
//        --url redis://127.0.0.1:6379 --prefix P --warmup W --deadline 600
//
// Needs `npm ci` in benchmarks/ (bullmq 6.7.0, ioredis 6.0.0, pinned in package-lock.json).

import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { FlowProducer, Queue, Worker } from 'bullmq';
import IORedis from 'ioredis';

const require = createRequire(import.meta.url);

const QUEUES = {
  fanout: ['fanout-parent', 'fanout-child'],
  flows: ['flows-parent', 'flows-child'],
  bulk: ['bulk'],
  add: ['add'],
  burst: ['burst'],
  start: ['start'],
  mapreduce: ['reduce', 'map'],
  chain: ['chain'],
};
const warm = (name) => `warm-${name}`;

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--')) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

// -- inputs (keep in step with runner.py) ------------------------------------------------------

const payload = (k) => createHash('sha256').update(String(k)).digest('hex'); // 64 characters
const childData = (k) => ({ i: k, payload: payload(k) });

function fanoutTree(n, parentQ, childQ) {
  const children = new Array(n);
  for (let k = 0; k < n; k++) children[k] = { name: 'child', queueName: childQ, data: childData(k) };
  return { name: 'parent', queueName: parentQ, data: { n }, children };
}

function smallFlows(count, parentQ, childQ) {
  const flows = new Array(count);
  for (let f = 0; f < count; f++) {
    const children = [];
    for (let k = 3 * f; k < 3 * f + 3; k++) children.push({ name: 'child', queueName: childQ, data: childData(k) });
    flows[f] = { name: 'parent', queueName: parentQ, data: { flow: f }, children };
  }
  return flows;
}

function plainJobs(n) {
  const jobs = new Array(n);
  for (let k = 0; k < n; k++) jobs[k] = { name: 'job', data: childData(k) };
  return jobs;
}

function mapreduceTree(n, reduceQ, mapQ) {
  const children = new Array(n);
  for (let k = 0; k < n; k++) children[k] = { name: 'map', queueName: mapQ, data: { k } };
  return { name: 'reduce', queueName: reduceQ, data: { n }, children };
}

function chainTree(depth, q) {
  let node = { name: 'step', queueName: q, data: { level: depth - 1, payload: payload(depth - 1) } };
  for (let level = depth - 2; level >= 0; level--) {
    node = { name: 'step', queueName: q, data: { level, payload: payload(level) }, children: [node] };
  }
  return node;
}

const expectedSum = (n) => (n * (n - 1)) / 2;

function percentiles(samplesNs) {
  const s = samplesNs.map(Number).sort((a, b) => a - b);
  if (!s.length) return {};
  const rank = (p) => s[Math.max(0, Math.ceil(p * s.length) - 1)] / 1e6;
  return { p50_ms: rank(0.5), p99_ms: rank(0.99), max_ms: s[s.length - 1] / 1e6, count: s.length };
}

// -- measuring ---------------------------------------------------------------------------------

const now = () => process.hrtime.bigint(); // CLOCK_MONOTONIC, as Python's time.monotonic_ns()
const secondsSince = (t) => Number(now() - t) / 1e9;

function connectionOptions(url) {
  const u = new URL(url);
  const opts = { host: u.hostname, port: Number(u.port || 6379), maxRetriesPerRequest: null };
  if (u.username) opts.username = decodeURIComponent(u.username);
  if (u.password) opts.password = decodeURIComponent(u.password);
  if (u.pathname && u.pathname.length > 1) opts.db = Number(u.pathname.slice(1));
  return opts;
}

// CPU seconds the host has been busy: user + nice + system + irq + softirq (as runner.py)
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

class Meter {
  constructor(info) {
    this.info = info;
    this.out = {};
  }

  async redis() {
    const cpu = await this.info.info('cpu');
    const mem = await this.info.info('memory');
    const field = (text, name) => Number(new RegExp(`^${name}:([0-9.]+)`, 'm').exec(text)[1]);
    return [field(cpu, 'used_cpu_sys') + field(cpu, 'used_cpu_user'), field(mem, 'used_memory')];
  }

  async start() {
    if (global.gc) global.gc();
    [this.cpu0, this.mem0] = await this.redis();
    this.h0 = hostBusySeconds();
    this.c0 = process.cpuUsage();
    this.t0 = now();
  }

  async stop(jobs, memory) {
    const t1 = now();
    const cpu = process.cpuUsage(this.c0);
    const h1 = hostBusySeconds();
    const [cpu1, mem1] = await this.redis();
    Object.assign(this.out, {
      seconds: Number(t1 - this.t0) / 1e9,
      t_start_ns: String(this.t0),
      t_end_ns: String(t1),
      jobs,
      client_cpu_seconds: (cpu.user + cpu.system) / 1e6,
      redis_cpu_seconds: cpu1 - this.cpu0,
      host_busy_cpu_seconds: h1 === null || this.h0 === null ? null : h1 - this.h0,
    });
    if (memory) this.out.redis_memory_bytes = mem1 - this.mem0;
    return this.out;
  }
}

function withDeadline(promise, seconds, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not happen within ${seconds}s`)), seconds * 1000);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

class Ctx {
  constructor(args) {
    this.args = args;
    this.url = args.url;
    this.prefix = args.prefix;
    this.connection = new IORedis(args.url, { maxRetriesPerRequest: null });
  }
  flowProducer() {
    return new FlowProducer({ connection: this.connection, prefix: this.prefix });
  }
  queue(name) {
    return new Queue(name, { connection: this.connection, prefix: this.prefix });
  }
  worker(name, processor, concurrency) {
    // each worker opens its own connections, as the Python workers do
    return new Worker(name, processor, { connection: connectionOptions(this.url), prefix: this.prefix, concurrency });
  }
}

// -- scenarios ---------------------------------------------------------------------------------

async function fanout(ctx, m, args, st) {
  const [parentQ, childQ] = QUEUES.fanout;
  const fp = ctx.flowProducer();
  let t = now();
  await fp.add(fanoutTree(1, warm(parentQ), warm(childQ)));
  st.setup_seconds = secondsSince(t);
  t = now();
  await fp.add(fanoutTree(args.warmup, warm(parentQ), warm(childQ)));
  st.warmup_seconds = secondsSince(t);
  const tree = fanoutTree(args.n, parentQ, childQ);
  await m.start();
  const root = await fp.add(tree);
  const out = await m.stop(args.n + 1, true);
  await fp.close();
  if (root.children.length !== args.n) throw new Error(`WRONG RESULT: ${root.children.length} children`);
  out.parent_id = root.job.id;
  out.self_check = `add returned the parent and ${root.children.length} children`;
  return out;
}

async function flows(ctx, m, args, st) {
  const [parentQ, childQ] = QUEUES.flows;
  const fp = ctx.flowProducer();
  let t = now();
  await fp.addBulk(smallFlows(1, warm(parentQ), warm(childQ)));
  st.setup_seconds = secondsSince(t);
  t = now();
  await fp.addBulk(smallFlows(args.warmup, warm(parentQ), warm(childQ)));
  st.warmup_seconds = secondsSince(t);
  const input = smallFlows(args.n, parentQ, childQ);
  await m.start();
  const roots = await fp.addBulk(input);
  const out = await m.stop(4 * args.n, true);
  await fp.close();
  if (roots.length !== args.n) throw new Error(`WRONG RESULT: addBulk returned ${roots.length} flows`);
  out.self_check = `add_bulk returned ${roots.length} flows`;
  return out;
}

async function bulk(ctx, m, args, st) {
  const [name] = QUEUES.bulk;
  const q = ctx.queue(name);
  const wq = ctx.queue(warm(name));
  let t = now();
  await wq.addBulk(plainJobs(1));
  await q.waitUntilReady();
  st.setup_seconds = secondsSince(t);
  t = now();
  await wq.addBulk(plainJobs(args.warmup));
  st.warmup_seconds = secondsSince(t);
  const jobs = plainJobs(args.n);
  await m.start();
  const added = await q.addBulk(jobs);
  const out = await m.stop(args.n, true);
  await q.close();
  await wq.close();
  if (added.length !== args.n) throw new Error(`WRONG RESULT: addBulk returned ${added.length} jobs`);
  out.self_check = `add_bulk returned ${added.length} jobs`;
  return out;
}

// The add scenarios' set-up (one add: connect, load the scripts) and warm-up round on the
// warm-up queue, one add after the other or all at once, as the measured adds.
async function warmUpAdds(q, wq, args, st, atOnce) {
  let t = now();
  await wq.add('job', childData(0));
  await q.waitUntilReady();
  st.setup_seconds = secondsSince(t);
  t = now();
  if (atOnce) {
    await Promise.all(Array.from({ length: args.warmup }, (_, k) => wq.add('job', childData(k))));
  } else {
    for (let k = 0; k < args.warmup; k++) await wq.add('job', childData(k));
  }
  st.warmup_seconds = secondsSince(t);
}

async function add(ctx, m, args, st) {
  const [name] = QUEUES.add;
  const q = ctx.queue(name);
  const wq = ctx.queue(warm(name));
  await warmUpAdds(q, wq, args, st, false);
  const inputs = [];
  for (let k = 0; k < args.n; k++) inputs.push(childData(k));
  const lat = [];
  const ids = new Set();
  await m.start();
  for (const data of inputs) {
    const a = now();
    ids.add((await q.add('job', data)).id);
    lat.push(now() - a);
  }
  const out = await m.stop(args.n, true);
  await q.close();
  await wq.close();
  if (ids.size !== args.n) throw new Error(`WRONG RESULT: ${ids.size} distinct ids for ${args.n} adds`);
  out.latency = percentiles(lat);
  out.self_check = `${args.n} adds returned ${ids.size} distinct ids`;
  return out;
}

async function burst(ctx, m, args, st) {
  // N Queue.add calls started at once (Promise.all); the time until the last one returned
  const [name] = QUEUES.burst;
  const q = ctx.queue(name);
  const wq = ctx.queue(warm(name));
  await warmUpAdds(q, wq, args, st, true);
  const inputs = [];
  for (let k = 0; k < args.n; k++) inputs.push(childData(k));
  await m.start();
  const jobs = await Promise.all(inputs.map((data) => q.add('job', data)));
  const out = await m.stop(args.n, true);
  await q.close();
  await wq.close();
  const ids = new Set(jobs.map((j) => j.id));
  if (ids.size !== args.n) throw new Error(`WRONG RESULT: ${ids.size} distinct ids for ${args.n} adds`);
  out.self_check = `${args.n} concurrent adds returned ${ids.size} distinct ids`;
  return out;
}

async function start(ctx, m, args, st) {
  const [name] = QUEUES.start;
  const started = new Map();
  const pending = new Map();
  const processor = async (job) => {
    started.set(job.data.i, now());
    return { i: job.data.i };
  };
  const listen = (w) => {
    w.on('completed', (job, result) => {
      const p = pending.get(`${job.data.i}:${job.name}`);
      if (p) p.resolve(result);
    });
    w.on('failed', (job, err) => {
      const p = pending.get(`${job.data.i}:${job.name}`);
      if (p) p.reject(new Error(`job ${job.id} failed: ${err}`));
    });
  };
  const one = async (q, k, jobName) => {
    const done = new Promise((resolve, reject) => pending.set(`${k}:${jobName}`, { resolve, reject }));
    const a = now();
    await q.add(jobName, childData(k));
    await withDeadline(done, args.deadline, `job ${k}'s completion`);
    return started.get(k) - a;
  };
  const q = ctx.queue(name);
  const wq = ctx.queue(warm(name));
  const ww = ctx.worker(warm(name), processor, 1);
  listen(ww);
  await ww.waitUntilReady();
  let t = now();
  await one(wq, 0, 'warm');
  st.setup_seconds = secondsSince(t);
  t = now();
  for (let k = 1; k < args.warmup; k++) await one(wq, k, 'warm');
  await ww.close();
  const w = ctx.worker(name, processor, 1);
  listen(w);
  await w.waitUntilReady();
  await one(q, -1, 'first'); // untimed: the queue connected, the worker taking jobs
  st.warmup_seconds = secondsSince(t);
  started.clear();
  const lat = [];
  await m.start();
  for (let k = 0; k < args.n; k++) lat.push(await one(q, k, 'job'));
  const out = await m.stop(args.n, false);
  await w.close();
  await q.close();
  await wq.close();
  out.latency = percentiles(lat);
  out.self_check = `${args.n} jobs started and completed, one at a time`;
  return out;
}

async function endToEnd(ctx, fp, m, args, { queues, makeTree, workers, check, n, jobs, timed, idleWorkers }) {
  // Timed: add the flow, wait for the root's completion. idleWorkers: the workers are started
  // and ready before (outside) the timed region (chain); else they are created once the add
  // has returned, inside it (mapreduce, as runner.py).
  const seen = new Map();
  const errors = [];
  let root = null;
  let settle;
  const done = new Promise((resolve, reject) => {
    settle = { resolve, reject };
  });
  let ws = [];
  const startWorkers = () => {
    ws = workers.map(([q, fn, c]) => ctx.worker(q, fn, c));
    for (const w of ws) {
      w.on('completed', (job, result) => {
        seen.set(job.id, result);
        if (job.id === root) settle.resolve(result);
      });
      w.on('failed', (job, err) => settle.reject(new Error(`job ${job && job.id} failed: ${err}`)));
      w.on('error', (err) => errors.push(String(err)));
    }
  };
  if (idleWorkers) {
    startWorkers();
    await Promise.all(ws.map((w) => w.waitUntilReady()));
  }
  const tree = makeTree(n, ...queues);
  let out = {};
  if (timed) await m.start();
  const a = now();
  const flow = await fp.add(tree);
  root = flow.job.id;
  const added = now();
  if (!idleWorkers) startWorkers();
  if (seen.has(root)) settle.resolve(seen.get(root));
  const result = await withDeadline(done, args.deadline, "the root's completion");
  if (timed) out = await m.stop(jobs, false);
  out.add_seconds = Number(added - a) / 1e9;
  out.process_seconds = secondsSince(added);
  out.parent_id = root;
  out.close_timeouts = 0;
  await Promise.all(ws.map((w) => w.close()));
  check(result, n);
  out.worker_error_count = errors.length;
  out.worker_errors = errors.slice(0, 5);
  return [out, result];
}

async function mapreduce(ctx, m, args, st) {
  const [reduceQ, mapQ] = QUEUES.mapreduce;
  const fp = ctx.flowProducer();
  const mapJob = async (job) => ({ n: job.data.k });
  const reduceJob = async (job) => {
    const values = await job.getChildrenValues();
    let sum = 0;
    let count = 0;
    for (const key in values) {
      sum += values[key].n;
      count += 1;
    }
    return { sum, count };
  };
  const check = (result, n) => {
    if (result.sum !== expectedSum(n) || result.count !== n) {
      throw new Error(`WRONG RESULT: the parent returned ${JSON.stringify(result)}, expected sum ${expectedSum(n)} of ${n}`);
    }
  };
  let t = now();
  await fp.add(fanoutTree(1, warm('setup-parent'), warm('setup-child'))); // connect, load scripts
  st.setup_seconds = secondsSince(t);
  t = now();
  const spec = (rq, mq, n, timed) => ({
    queues: [rq, mq],
    makeTree: mapreduceTree,
    workers: [
      [mq, mapJob, args.c],
      [rq, reduceJob, 1],
    ],
    check,
    n,
    jobs: n + 1,
    timed,
    idleWorkers: false,
  });
  await endToEnd(ctx, fp, m, args, spec(warm(reduceQ), warm(mapQ), args.warmup, false));
  st.warmup_seconds = secondsSince(t);
  const [out, result] = await endToEnd(ctx, fp, m, args, spec(reduceQ, mapQ, args.n, true));
  await fp.close();
  out.result = result;
  out.self_check = `the parent returned sum(range(${args.n})) over ${args.n} children`;
  return out;
}

async function chain(ctx, m, args, st) {
  const [name] = QUEUES.chain;
  const fp = ctx.flowProducer();
  const step = async (job) => {
    const values = await job.getChildrenValues();
    let depth = 1;
    for (const key in values) depth += values[key].depth;
    return { depth };
  };
  const check = (result, n) => {
    if (result.depth !== n) throw new Error(`WRONG RESULT: the root returned ${JSON.stringify(result)}, expected depth ${n}`);
  };
  let t = now();
  await fp.add(fanoutTree(1, warm('setup-parent'), warm('setup-child')));
  st.setup_seconds = secondsSince(t);
  t = now();
  const spec = (q, n, timed) => ({
    queues: [q],
    makeTree: chainTree,
    workers: [[q, step, 1]],
    check,
    n,
    jobs: n,
    timed,
    idleWorkers: true,
  });
  await endToEnd(ctx, fp, m, args, spec(warm(name), Math.max(2, args.warmup), false));
  st.warmup_seconds = secondsSince(t);
  const [out, result] = await endToEnd(ctx, fp, m, args, spec(name, args.n, true));
  await fp.close();
  out.result = result;
  out.self_check = `the root returned depth ${args.n}, each step reading its child's value`;
  return out;
}

const SCENARIOS = { fanout, flows, bulk, add, burst, start, mapreduce, chain };

async function main() {
  const raw = parseArgs(process.argv.slice(2));
  const args = {
    scenario: raw.scenario,
    n: Number(raw.n),
    c: Number(raw.c || 1),
    url: raw.url,
    prefix: raw.prefix,
    warmup: Number(raw.warmup || 10),
    deadline: Number(raw.deadline || 600),
  };
  const fn = SCENARIOS[args.scenario];
  if (!fn) throw new Error(`unknown scenario ${args.scenario}`);
  const ctx = new Ctx(args);
  const info = new IORedis(args.url, { maxRetriesPerRequest: null });
  const st = {};
  let out;
  try {
    await info.ping();
    out = await fn(ctx, new Meter(info), args, st);
  } finally {
    await info.quit();
    await ctx.connection.quit();
  }
  Object.assign(out, st);
  const bullmqVersion = require('bullmq/package.json').version;
  const ioredisVersion = require('ioredis/package.json').version;
  out.version = `bullmq ${bullmqVersion} (ioredis ${ioredisVersion}, node ${process.versions.node})`;
  // exit once the line is written, whatever handles a library may have left open
  process.stdout.write(JSON.stringify(out) + '\n', () => process.exit(0));
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
