// Socket.IO 4.8 peer for roam-race: rooms and fan-out only. It authenticates nobody, numbers
// nothing and stores nothing; it is the baseline Roam is compared against.
//
//   node socketio.js PORT
//
// Events: `join` (room, ack) puts the socket in the room and acknowledges; `publish` (room,
// payload) emits `m` (payload) to every socket in the room, the sender included if it joined.
"use strict";
const { Server } = require("socket.io");

const port = Number(process.argv[2]);
if (!Number.isInteger(port) || port <= 0 || port > 65535) {
  console.error("usage: node socketio.js PORT");
  process.exit(2);
}

const http = require("http").createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
const io = new Server(http, {
  transports: ["websocket"],
  serveClient: false,
  perMessageDeflate: false,
  maxHttpBufferSize: 1e6,
});

io.on("connection", (socket) => {
  socket.on("join", (room, ack) => {
    if (typeof room !== "string") return;
    socket.join(room);
    if (typeof ack === "function") ack();
  });
  socket.on("publish", (room, payload) => {
    if (typeof room !== "string") return;
    io.to(room).emit("m", payload);
  });
});

http.listen(port, "127.0.0.1", () => {
  console.log(`socket.io ${require("socket.io/package.json").version} listening on 127.0.0.1:${port}`);
});
const stop = () => io.close(() => process.exit(0));
process.on("SIGTERM", stop);
process.on("SIGINT", stop);
