// Clients that keep reconnecting to a Redis that turns them away, as the Node.js
// client libraries do it, one client per source address:
//
//   --lib ioredis --strategy flat:MS   ioredis with `retryStrategy: () => MS` (a flat
//                                       reconnect, a common hand-written setting)
//   --lib ioredis --strategy exp       ioredis with exponential backoff and equal
//                                       jitter: d/2 + random(d/2), d = min(2000, 50 * 2^n)
//   --lib node-redis --strategy default node-redis 4's own reconnect strategy,
//                                       min(retries * 50, 500) ms
//
// Usage: node retry.js --lib L --strategy S --port P --sources A,B,... --seconds N
// Prints "started" once every client exists, then "reconnects N" at the end.
// Every client is closed when the time is up; the process never outlives --seconds
// by more than a second.
"use strict";

const net = require("net");

function args() {
  const out = {};
  const argv = process.argv.slice(2);
  for (let i = 0; i + 1 < argv.length; i += 2) {
    out[argv[i].replace(/^--/, "")] = argv[i + 1];
  }
  for (const k of ["lib", "strategy", "port", "sources", "seconds"]) {
    if (out[k] === undefined) {
      console.error(`missing --${k}`);
      process.exit(2);
    }
  }
  return out;
}

const opts = args();
const port = Number(opts.port);
const sources = opts.sources.split(",");
const seconds = Number(opts.seconds);
let reconnects = 0;

// ioredis passes only host, port and family to net.createConnection; a host written
// "HOST#LOCAL" is connected from the source address LOCAL (loopback aliases stand
// for client hosts). node-redis takes `localAddress` itself.
const createConnection = net.createConnection;
net.createConnection = function (options, ...rest) {
  if (options && typeof options.host === "string" && options.host.includes("#")) {
    const [host, localAddress] = options.host.split("#");
    options = { ...options, host, localAddress };
  }
  return createConnection.call(this, options, ...rest);
};

function ioredisClient(source) {
  const Redis = require("ioredis");
  let retryStrategy;
  if (opts.strategy.startsWith("flat:")) {
    const ms = Number(opts.strategy.slice(5));
    retryStrategy = () => ms;
  } else if (opts.strategy === "exp") {
    // Equal jitter: between half and all of 100 ms doubling to a 2 s cap.
    retryStrategy = (times) => {
      const delay = Math.min(2000, 50 * 2 ** times);
      return Math.floor(delay / 2 + (delay / 2) * Math.random());
    };
  } else {
    throw new Error(`ioredis: unknown strategy ${opts.strategy}`);
  }
  const c = new Redis({
    host: `127.0.0.1#${source}`,
    port,
    retryStrategy,
    maxRetriesPerRequest: null,
    enableOfflineQueue: true,
  });
  c.on("error", () => {});
  c.on("reconnecting", () => reconnects++);
  return { close: () => c.disconnect() };
}

function nodeRedisClient(source) {
  const { createClient } = require("redis");
  if (opts.strategy !== "default") {
    throw new Error(`node-redis: unknown strategy ${opts.strategy}`);
  }
  const c = createClient({ socket: { host: "127.0.0.1", port, localAddress: source } });
  c.on("error", () => {});
  c.on("reconnecting", () => reconnects++);
  c.connect().catch(() => {});
  return { close: () => c.disconnect().catch(() => {}) };
}

const make = { ioredis: ioredisClient, "node-redis": nodeRedisClient }[opts.lib];
if (!make) {
  console.error(`unknown --lib ${opts.lib}`);
  process.exit(2);
}
const clients = sources.map(make);
console.log("started");
setTimeout(() => {
  for (const c of clients) c.close();
  console.log(`reconnects ${reconnects}`);
  setTimeout(() => process.exit(0), 200);
}, seconds * 1000);
