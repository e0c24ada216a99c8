// One add of a 1+N fan-out with Node bullmq's FlowProducer.add (one MULTI/EXEC), run by
// benchmarks/fan_out.py in a fresh process. Mirrors that script's Python producer: the same
// tree (a parent in queue "reduce", N children {i, payload} in queue "map"), a warm-up add of
// the same shape on other queues, then the timed add. Protocol on stdin/stdout:
//
//   child  -> "READY {json}"   (connected, warmed up, input tree built)
//   parent -> "go"             (the parent has reset Redis's SLOWLOG / LATENCY meanwhile)
//   child  -> "ADDED {json}"   (seconds, CLOCK_MONOTONIC start/end in ns, client CPU, RSS)
//
//   node benchmarks/node/fan_out.mjs --url redis://127.0.0.1:6379 --prefix P --n 50000
//
// Needs `npm ci` in benchmarks/ (bullmq 6.7.0, ioredis 6.0.0, pinned in package-lock.json).

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { FlowProducer } from 'bullmq';
import IORedis from 'ioredis';

const require = createRequire(import.meta.url);

// The same names and payloads as fan_out.py.
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

function payload(k) {
  return createHash('sha256').update(String(k)).digest('hex'); // 64 chars
}

function fanOutTree(n, mapQ = MAP_Q, reduceQ = REDUCE_Q) {
  const children = new Array(n);
  for (let k = 0; k < n; k++) {
    children[k] = { name: 'map', queueName: mapQ, data: { i: k, payload: payload(k) } };
  }
  return { name: 'reduce', queueName: reduceQ, data: { n }, children };
}

function maxRssMB() {
  return process.resourceUsage().maxRSS / 1024; // KiB, as ru_maxrss on Linux
}

function readLine() {
  return new Promise((resolve, reject) => {
    let buffered = '';
    const onData = (chunk) => {
      buffered += chunk.toString();
      const nl = buffered.indexOf('\n');
      if (nl >= 0) {
        process.stdin.off('data', onData);
        process.stdin.pause();
        resolve(buffered.slice(0, nl).trim());
      }
    };
    process.stdin.on('data', onData);
    process.stdin.once('end', () => reject(new Error('stdin closed before "go"')));
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const n = Number(args.n);
  const connection = new IORedis(args.url, { maxRetriesPerRequest: null });
  const producer = new FlowProducer({ connection, prefix: args.prefix });
  await producer.add(fanOutTree(10, WARM_MAP_Q, WARM_REDUCE_Q)); // loads the scripts, warms the JIT
  const tree = fanOutTree(n);
  const beforeAdd = maxRssMB();
  process.stdout.write(`READY ${JSON.stringify({ before_add_rss_mb: beforeAdd })}\n`);
  const word = await readLine();
  if (word !== 'go') throw new Error(`expected "go", got ${JSON.stringify(word)}`);

  const c0 = process.cpuUsage();
  const t0 = process.hrtime.bigint(); // CLOCK_MONOTONIC, as Python's time.monotonic_ns()
  const result = await producer.add(tree);
  const t1 = process.hrtime.bigint();
  const cpu = process.cpuUsage(c0);
  if (result.children.length !== n) throw new Error(`expected ${n} children, got ${result.children.length}`);
  const bullmqVersion = require('bullmq/package.json').version;
  const ioredisVersion = require('ioredis/package.json').version;
  process.stdout.write(
    `ADDED ${JSON.stringify({
      seconds: Number(t1 - t0) / 1e9,
      t_add_start_ns: String(t0),
      t_add_end_ns: String(t1),
      added: result.children.length,
      parent_id: result.job.id,
      client_cpu_seconds: (cpu.user + cpu.system) / 1e6,
      before_add_rss_mb: beforeAdd,
      peak_rss_mb_self: maxRssMB(),
      version: `bullmq ${bullmqVersion} (ioredis ${ioredisVersion}, node ${process.versions.node})`,
    })}\n`,
  );
  await producer.close();
  await connection.quit();
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
