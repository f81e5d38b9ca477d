// Bun pub/sub peer for roam-race: Bun.serve's WebSocket (uWebSockets) with topic publish,
// speaking the same Engine.IO v4 / Socket.IO framing as the node peer, so one client drives
// both. It authenticates nobody, numbers nothing and stores nothing.
//
//   bun bun.js PORT
//
// Frames handled: client `40` (connect) -> `40{"sid"}`; `42[id]["join",room]` -> subscribe,
// then `43[id][]` when an ack id was given; `42["publish",room,payload]` -> publish
// `42["m",payload]` to the room's topic (every subscriber, the sender included if it joined);
// `3` (pong) is accepted. The server sends `2` (ping) to every socket every pingInterval.
const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: bun bun.js PORT");
  process.exit(2);
}

const PING_INTERVAL = 25000;
const PING_TIMEOUT = 20000;
const ALL = "\u0000all";
let nextSid = 0;

const server = Bun.serve({
  hostname: "127.0.0.1",
  port,
  fetch(req, srv) {
    const url = new URL(req.url);
    if (url.pathname !== "/socket.io/" || url.searchParams.get("transport") !== "websocket") {
      return new Response("not found", { status: 404 });
    }
    if (srv.upgrade(req, { data: { sid: (nextSid++).toString(36) } })) return undefined;
    return new Response("upgrade failed", { status: 400 });
  },
  websocket: {
    perMessageDeflate: false,
    maxPayloadLength: 1e6,
    idleTimeout: 0,
    open(ws) {
      ws.subscribe(ALL);
      ws.send(
        "0" +
          JSON.stringify({
            sid: ws.data.sid,
            upgrades: [],
            pingInterval: PING_INTERVAL,
            pingTimeout: PING_TIMEOUT,
            maxPayload: 1e6,
          }),
      );
    },
    message(ws, msg) {
      if (typeof msg !== "string" || msg.length === 0) return;
      if (msg === "3") return;
      if (msg.startsWith("40")) {
        ws.send("40" + JSON.stringify({ sid: ws.data.sid }));
        return;
      }
      if (!msg.startsWith("42")) return;
      let i = 2;
      while (i < msg.length && msg.charCodeAt(i) >= 48 && msg.charCodeAt(i) <= 57) i++;
      const ackId = msg.slice(2, i);
      let ev;
      try {
        ev = JSON.parse(msg.slice(i));
      } catch {
        return;
      }
      if (!Array.isArray(ev) || typeof ev[1] !== "string") return;
      if (ev[0] === "join") {
        ws.subscribe(ev[1]);
        if (ackId) ws.send("43" + ackId + "[]");
      } else if (ev[0] === "publish") {
        server.publish(ev[1], "42" + JSON.stringify(["m", ev[2]]));
      }
    },
  },
});

setInterval(() => server.publish(ALL, "2"), PING_INTERVAL);
const stop = () => {
  server.stop(true);
  process.exit(0);
};
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
console.log(`bun ${Bun.version} listening on 127.0.0.1:${server.port}`);
