// One measurement of Node bullmq's FlowProducer, run by benchmarks/flow_add.py in a fresh
// process. Mirrors the Python worker of flow_add.py: same trees, same payloads, same queue
// names, a warm-up add before the timed one, result printed as one JSON line on stdout.
//
//   node benchmarks/node/flow_add.mjs --url redis://127.0.0.1:6379 --prefix P \
//        --scenario fanout|small --n 10000
//
// Needs `npm ci` in benchmarks/ (bullmq 6.7.0, ioredis 6.0.0, pinned in package-lock.json).

import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { performance } from 'node:perf_hooks';
import { FlowProducer } from 'bullmq';
import IORedis from 'ioredis';

const require = createRequire(import.meta.url);

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i += 2) {
    if (!argv[i].startsWith('--')) throw new Error(`bad argument ${argv[i]}`);
    out[argv[i].slice(2)] = argv[i + 1];
  }
  return out;
}

// The same names and payloads as flow_add.py.
const PARENT_Q = 'parent-q';
const CHILD_Q = 'child-q';
const SMALL_PARENT_Q = 'small-parent-q';
const SMALL_CHILD_Q = 'small-child-q';
const WARM_PARENT_Q = 'warm-parent-q';
const WARM_CHILD_Q = 'warm-child-q';

function payload(k) {
  return createHash('sha256').update(String(k)).digest('hex'); // 64 chars
}

function fanout(n, parentQ = PARENT_Q, childQ = CHILD_Q) {
  const children = new Array(n);
  for (let k = 0; k < n; k++) {
    children[k] = { name: 'child', queueName: childQ, data: { i: k, payload: payload(k) } };
  }
  return { name: 'parent', queueName: parentQ, data: { n }, children };
}

function smallFlows(count, parentQ = SMALL_PARENT_Q, childQ = SMALL_CHILD_Q) {
  const flows = new Array(count);
  for (let f = 0; f < count; f++) {
    const children = [];
    for (let c = 0; c < 3; c++) {
      const k = f * 3 + c;
      children.push({ name: 'child', queueName: childQ, data: { i: k, payload: payload(k) } });
    }
    flows[f] = { name: 'parent', queueName: parentQ, data: { flow: f }, children };
  }
  return flows;
}

function cpuSeconds(usage) {
  return (usage.user + usage.system) / 1e6;
}

function maxRssMB() {
  return process.resourceUsage().maxRSS / 1024; // maxRSS is in KiB, as ru_maxrss on Linux
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const n = Number(args.n);
  const scenario = args.scenario;
  const connection = new IORedis(args.url, { maxRetriesPerRequest: null });
  const producer = new FlowProducer({ connection, prefix: args.prefix });
  const baseline = maxRssMB();

  let jobs;
  let elapsed;
  let cpu;
  let beforeCall;
  if (scenario === 'fanout') {
    await producer.add(fanout(10, WARM_PARENT_Q, WARM_CHILD_Q)); // loads scripts, warms the JIT
    const tree = fanout(n);
    beforeCall = maxRssMB();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const result = await producer.add(tree);
    elapsed = (performance.now() - t0) / 1000;
    cpu = cpuSeconds(process.cpuUsage(c0));
    if (result.children.length !== n) throw new Error(`expected ${n} children`);
    jobs = n + 1;
  } else if (scenario === 'small') {
    await producer.addBulk(smallFlows(10, WARM_PARENT_Q, WARM_CHILD_Q));
    const flows = smallFlows(n);
    beforeCall = maxRssMB();
    const c0 = process.cpuUsage();
    const t0 = performance.now();
    const result = await producer.addBulk(flows);
    elapsed = (performance.now() - t0) / 1000;
    cpu = cpuSeconds(process.cpuUsage(c0));
    if (result.length !== n) throw new Error(`expected ${n} flows`);
    jobs = n * 4;
  } else {
    throw new Error(`unknown scenario ${scenario}`);
  }
  const peak = maxRssMB();
  await producer.close();
  await connection.quit();
  const bullmqVersion = require('bullmq/package.json').version;
  const ioredisVersion = require('ioredis/package.json').version;
  process.stdout.write(
    JSON.stringify({
      seconds: elapsed,
      client_cpu_seconds: cpu,
      jobs,
      peak_rss_mb_self: peak,
      baseline_rss_mb: baseline,
      before_call_rss_mb: beforeCall,
      version: `bullmq ${bullmqVersion} (ioredis ${ioredisVersion}, node ${process.versions.node})`,
    }) + '\n',
  );
}

main().catch((err) => {
  process.stderr.write(`${err && err.stack ? err.stack : err}\n`);
  process.exit(1);
});
