#!/usr/bin/env node
// Runs a Raspberry Pi Pico (RP2040) firmware image in the rp2040js emulator.
//
// You bring the UF2 (e.g. MicroPython's rp2 port, RPI_PICO) and the RP2040
// boot ROM: neither is part of this repository.  The driver adds what the
// emulator leaves out and a stand-in needs:
//
//   * flash that keeps its bytes: the file system region is loaded from
//     --flash at start and written back on exit, on SIGTERM/SIGINT/SIGHUP
//     (a power cut: whatever the flash held at that instant) and on SIGUSR1
//     (save and go on).  rp2040js does not emulate flash erase and program,
//     so the boot ROM's flash_range_erase and flash_range_program entries are
//     replaced (in the emulator's copy of the ROM only) by a breakpoint that
//     this driver serves;
//   * USB CDC (the REPL, where MicroPython prints) on stdin/stdout, or a tty;
//   * UART0 and UART1 on host ttys (a pty's slave end), bytes paced at the
//     baud rate the firmware set, in emulated time;
//   * a stop at an emulated instruction count or time: a power cut.
//
// usage: node pico.mjs --uf2 FW.uf2 --bootrom ROM.bin --flash FS.img
//          [--uart0 TTY] [--uart1 TTY] [--cdc TTY] [--stop-insns N]
//          [--stop-ms MS] [--cut-after TEXT:N] [--mark TEXT]... [--fast]
//          [--exit-on-eof]
//
// --cut-after TEXT:N cuts the power N instructions after the first CDC line
// holding TEXT (e.g. a log line of the firmware's): a cut at a chosen point
// of a transaction, whatever the host's timing was before it.
// On stderr it reports `pico: ...` lines: `pico: mark TEXT at N ms, M insns`
// the first time a CDC line contains each --mark TEXT (emulated time since
// reset), and `pico: stop ...` with the totals when it ends.

import fs from 'node:fs';
import tty from 'node:tty';
import { ConsoleLogger, LogLevel, Simulator, USBCDC } from 'rp2040js';

const FLASH_BASE = 0x10000000;
const FS_OFFSET = 0xa0000; // MicroPython rp2, RPI_PICO: 2 MB flash, last 1408 KB
const FS_SIZE = 1408 * 1024;
const CPU_HZ = 125e6;
const NS_PER_CYCLE = 1e9 / CPU_HZ;

function parseArgs(argv) {
  const a = { mark: [], fast: false };
  for (let i = 0; i < argv.length; i++) {
    const k = argv[i];
    const flag = k.replace(/^--/, '');
    if (flag === 'fast' || flag === 'exit-on-eof') a[flag] = true;
    else if (flag === 'mark') a.mark.push(argv[++i]);
    else if (flag === 'cut-after') {
      const v = argv[++i];
      const at = v.lastIndexOf(':');
      a.cut = [v.slice(0, at), Number(v.slice(at + 1))];
    }
    else if (['uf2', 'bootrom', 'flash', 'uart0', 'uart1', 'cdc', 'stop-insns', 'stop-ms',
      'fs-offset', 'fs-size'].includes(flag)) a[flag] = argv[++i];
    else {
      process.stderr.write(`pico: unknown argument ${k}\n`);
      process.exit(2);
    }
  }
  for (const need of ['uf2', 'bootrom', 'flash']) {
    if (!a[need]) {
      process.stderr.write('usage: node pico.mjs --uf2 FW.uf2 --bootrom ROM.bin --flash FS.img ' +
        '[--uart0 TTY] [--uart1 TTY] [--cdc TTY] [--stop-insns N] [--stop-ms MS] [--mark TEXT] [--fast] ' +
        '[--exit-on-eof]\n');
      process.exit(2);
    }
  }
  return a;
}

const args = parseArgs(process.argv.slice(2));
const fsOffset = args['fs-offset'] ? Number(args['fs-offset']) : FS_OFFSET;
const fsSize = args['fs-size'] ? Number(args['fs-size']) : FS_SIZE;
const log = (s) => process.stderr.write(`pico: ${s}\n`);

const sim = new Simulator();
const mcu = sim.rp2040;
mcu.logger = new ConsoleLogger(process.env.PICO_LOG === 'debug' ? LogLevel.Debug : LogLevel.Error);

// --- boot ROM, with flash erase/program served here ---------------------
const rom = fs.readFileSync(args.bootrom);
if (rom.length !== 16384) {
  log(`boot ROM ${args.bootrom} is ${rom.length} bytes, not 16384`);
  process.exit(2);
}
mcu.loadBootrom(new Uint32Array(rom.buffer, rom.byteOffset, rom.length / 4));
const romView = new DataView(mcu.bootrom.buffer);

function romFunction(code) {
  // the ROM's function table: a 16-bit pointer at 0x14 to (code, address) pairs
  let p = romView.getUint16(0x14, true);
  for (;;) {
    const c = romView.getUint16(p, true);
    if (c === 0) return 0;
    if (c === (code.charCodeAt(0) | (code.charCodeAt(1) << 8))) return romView.getUint16(p + 2, true) & ~1;
    p += 4;
  }
}

const BKPT_ERASE = 0xe1;
const BKPT_PROGRAM = 0xe2;
const BKPT_NOP = 0xe3;
// flash_range_erase (RE), flash_range_program (RP), and the four helpers around
// them that drive the SSI (connect, exit XIP, flush cache, enter command XIP):
// each becomes `bkpt #n; bx lr`.
for (const [code, bk] of [['RE', BKPT_ERASE], ['RP', BKPT_PROGRAM], ['IF', BKPT_NOP],
  ['EX', BKPT_NOP], ['FC', BKPT_NOP], ['CX', BKPT_NOP]]) {
  const at = romFunction(code);
  if (!at) {
    log(`boot ROM has no ${code} function`);
    process.exit(2);
  }
  romView.setUint16(at, 0xbe00 | bk, true);
  romView.setUint16(at + 2, 0x4770, true);
}

let flashWrites = 0;
mcu.onBreak = (code) => {
  const r = mcu.core.registers;
  if (code === BKPT_ERASE) { // (offset, count, block size, block command)
    const off = r[0] >>> 0;
    const count = r[1] >>> 0;
    mcu.flash.fill(0xff, off, off + count);
    flashWrites++;
  } else if (code === BKPT_PROGRAM) { // (offset, data pointer, count): NOR flash only clears bits
    const off = r[0] >>> 0;
    const src = r[1] >>> 0;
    const count = r[2] >>> 0;
    for (let i = 0; i < count; i++) mcu.flash[off + i] &= mcu.readUint8(src + i);
    flashWrites++;
  } else if (code !== BKPT_NOP) {
    log(`breakpoint ${code} at 0x${(mcu.core.PC >>> 0).toString(16)}: stopping`);
    finish(3);
  }
};

// --- the firmware and the file system -------------------------------------
function loadUF2(path) {
  const buf = fs.readFileSync(path);
  for (let at = 0; at + 512 <= buf.length; at += 512) {
    const b = buf.subarray(at, at + 512);
    if (b.readUInt32LE(0) !== 0x0a324655 || b.readUInt32LE(4) !== 0x9e5d5157) continue;
    const addr = b.readUInt32LE(12);
    const size = b.readUInt32LE(16);
    if (addr < FLASH_BASE || addr + size > FLASH_BASE + mcu.flash.length) continue;
    mcu.flash.set(b.subarray(32, 32 + size), addr - FLASH_BASE);
  }
}
loadUF2(args.uf2);

if (fs.existsSync(args.flash)) {
  const img = fs.readFileSync(args.flash);
  mcu.flash.set(img.subarray(0, Math.min(img.length, fsSize)), fsOffset);
  log(`flash ${args.flash}: ${img.length} bytes at 0x${fsOffset.toString(16)}`);
} else {
  log(`flash ${args.flash}: new (erased)`);
}

function saveFlash() {
  const tmp = args.flash + '.tmp';
  fs.writeFileSync(tmp, mcu.flash.subarray(fsOffset, fsOffset + fsSize));
  fs.renameSync(tmp, args.flash);
}

// --- USB CDC: the REPL and the firmware's log --------------------------------
const cdc = new USBCDC(mcu.usbCtrl);
const cdcIn = [];
// rp2040js answers every read the device arms on the CDC OUT endpoint at once,
// with zero bytes when it has none: the device re-arms, an interrupt storm
// that starves MicroPython.  A real host waits until it has data; so do we.
let cdcRead = null;
const hostRead = mcu.usbCtrl.onEndpointRead;
mcu.usbCtrl.onEndpointRead = (ep, size) => {
  if (ep === cdc.outEndpoint && cdc.txFIFO.empty) cdcRead = [ep, size];
  else hostRead(ep, size);
};
let cdcOutFd = 1;
let line = '';
const marks = new Set(args.mark);
cdc.onSerialData = (data) => {
  fs.writeSync(cdcOutFd, data);
  for (const byte of data) {
    if (byte === 10) {
      for (const m of marks) {
        if (line.includes(m)) {
          marks.delete(m);
          log(`mark ${m} at ${(mcu.clock.nanos / 1e6).toFixed(1)} ms, ${insns} insns`);
        }
      }
      if (args.cut && stopInsns === Infinity && line.includes(args.cut[0])) {
        stopInsns = insns + args.cut[1];
        log(`cut: "${args.cut[0]}" at ${insns} insns; power off at ${stopInsns}`);
      }
      line = '';
    } else if (line.length < 4096) {
      line += String.fromCharCode(byte);
    }
  }
};

function readInto(fd, queue, name) {
  const st = fd === 0 && !tty.isatty(0) ? process.stdin : new tty.ReadStream(fd);
  st.on('data', (chunk) => {
    if (fd === 0 && tty.isatty(0) && chunk.includes(0x18)) finish(0, 'Ctrl-X'); // Ctrl-C goes to the board
    for (const b of chunk) queue.push(b);
    wake();
  });
  st.on('error', (e) => {
    if (e.code !== 'EIO') log(`${name}: ${e.message}`); // EIO: the pty's other end closed
  });
  if (fd === 0 && tty.isatty(0)) st.setRawMode(true);
  return st;
}

if (args.cdc) {
  const fd = fs.openSync(args.cdc, 'r+');
  cdcOutFd = fd;
  readInto(fd, cdcIn, 'cdc');
} else {
  readInto(0, cdcIn, 'stdin');
  // stdin closed: the board goes on, unless --exit-on-eof (a launcher that
  // holds our stdin has gone: do not run on as an orphan)
  process.stdin.on('end', () => { if (args['exit-on-eof']) finish(0, 'stdin closed'); });
}

// --- UARTs: host ttys, paced at the firmware's baud rate --------------------
// rp2040js raises the TX interrupt on every interrupt check, so once
// MicroPython enables it (it always does) the interrupt never clears: the
// board spends all its time in the UART handler.  Here it is raised as the
// PL011 does: when the transmit FIFO drains, i.e. after a byte is written
// (the emulated FIFO sends each byte at once).
const TXINTR = 1 << 5;
for (const dev of mcu.uart) {
  dev.checkInterrupts = function () {
    this.rp2040.setInterrupt(this.irq, !!(this.interruptStatus & this.interruptMask));
  };
  const write = dev.writeUint32.bind(dev);
  dev.writeUint32 = (offset, value) => {
    write(offset, value);
    if (offset === 0) { // UARTDR
      dev.interruptStatus |= TXINTR;
      dev.checkInterrupts();
    }
  };
}
const uarts = [];
for (const n of [0, 1]) {
  const path = args[`uart${n}`];
  if (!path) continue;
  const fd = fs.openSync(path, 'r+');
  const u = { n, dev: mcu.uart[n], fd, rx: [], out: [], nextNs: 0 };
  u.dev.onByte = (b) => u.out.push(b);
  readInto(fd, u.rx, `uart${n}`);
  uarts.push(u);
}

const RXFF = 1 << 6; // UARTFR: receive FIFO full

function charNanos(u) { // start + data + parity + stop bits, at the baud rate set
  const baud = u.dev.baudRate;
  return baud > 0 && Number.isFinite(baud) ? 1e10 / baud : 1e5;
}

// what the firmware set the line to (LCR_H, baud divisors), once it is used:
// rp2040js carries data bytes only; parity and stop bits are not emulated
function describe(u) {
  const lcr = u.dev.lineCtrlRegister;
  const parity = !(lcr & 2) ? 'none' : lcr & 4 ? 'even' : 'odd';
  const line = `${u.dev.baudRate} baud, ${u.dev.wordLength} data bits, parity ${parity}, ` +
    `${lcr & 8 ? 2 : 1} stop bit(s)`;
  if (line !== u.line) {
    u.line = line;
    log(`uart${u.n}: ${line} (set by the firmware; parity and stop bits are not emulated)`);
  }
}

function pumpIO() {
  const now = mcu.clock.nanos;
  for (const u of uarts) {
    if (u.rx.length || u.out.length) describe(u);
    while (u.rx.length && now >= u.nextNs && !(u.dev.flags & RXFF)) {
      u.dev.feedByte(u.rx.shift());
      u.nextNs = Math.max(now, u.nextNs) + charNanos(u);
    }
    if (u.out.length) {
      fs.writeSync(u.fd, Buffer.from(u.out));
      u.out.length = 0;
    }
  }
  while (cdcIn.length && cdc.txFIFO.itemCount < cdc.txFIFO.size) cdc.sendSerialByte(cdcIn.shift());
  if (cdcRead && !cdc.txFIFO.empty) {
    const [ep, size] = cdcRead;
    cdcRead = null;
    hostRead(ep, size);
  }
}

// the next emulated time at which a UART byte is due (Infinity if none)
function nextFeed() {
  let t = Infinity;
  for (const u of uarts) if (u.rx.length) t = Math.min(t, u.nextNs);
  return t;
}

// --- the run loop -------------------------------------------------------------
let stopInsns = args['stop-insns'] ? Number(args['stop-insns']) : Infinity;
const stopNs = args['stop-ms'] ? Number(args['stop-ms']) * 1e6 : Infinity;
let insns = 0;
let timer = null;
let done = false;
const real0 = performance.now();

function wake() {
  if (timer !== null && !done) {
    clearTimeout(timer);
    timer = setTimeout(run, 0);
  }
}

// While the board sleeps, emulated time passes no faster than the wall clock:
// each call of run() may sleep through as much emulated time as real time
// went by since the previous call began (the host's own sleep included).
// Computing, emulated time passes slower (rp2040js runs some 15 million
// instructions a second, the RP2040 125 million cycles), and that lag is
// never made up by racing through a sleep: a time-out would expire before
// host bytes already on their way are read.  --fast: sleeps cost nothing.
let lastRun = null;

function run() {
  timer = null;
  const { core, clock } = mcu;
  const start = performance.now();
  let idle = lastRun === null ? 0 : (start - lastRun) * 1e6; // ns the board may sleep now
  lastRun = start;
  const sliceEnd = start + 25;
  while (performance.now() < sliceEnd) {
    for (let i = 0; i < 50000; i++) {
      if (insns >= stopInsns || clock.nanos >= stopNs) return finish(0, 'power cut');
      if (!core.waiting) {
        clock.tick(core.executeInstruction() * NS_PER_CYCLE);
        insns++;
        continue;
      }
      // asleep (WFI/WFE): on to the next timer alarm or UART byte
      const alarm = clock.nextAlarm ? Math.max(clock.nanos, clock.nextAlarm.nanos) : Infinity;
      const target = Math.min(alarm, nextFeed(), stopNs);
      const step = target - clock.nanos;
      if (args.fast ? target === Infinity : step > idle) {
        if (!args.fast) clock.tick(idle);
        idle = 0;
        pumpIO();
        if (!core.waiting) continue;
        // nothing due yet: let the host sleep (and read what arrives)
        timer = setTimeout(run, Math.max(1, Math.min(10, step / 1e6)));
        return;
      }
      if (!args.fast) idle -= step;
      clock.tick(step);
      pumpIO();
    }
    pumpIO();
  }
  timer = setTimeout(run, 0);
}

function finish(code, why) {
  if (done) return;
  done = true;
  if (timer !== null) clearTimeout(timer);
  for (const u of uarts) if (u.out.length) fs.writeSync(u.fd, Buffer.from(u.out));
  saveFlash();
  log(`stop${why ? ' (' + why + ')' : ''} at ${(mcu.clock.nanos / 1e6).toFixed(1)} ms emulated, ` +
    `${insns} insns, ${((performance.now() - real0) / 1000).toFixed(1)} s real, ` +
    `${flashWrites} flash erase/program calls; flash saved to ${args.flash}`);
  process.exit(code);
}

for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(sig, () => finish(0, sig));
process.on('SIGUSR1', () => {
  saveFlash();
  log(`flash saved to ${args.flash} at ${(mcu.clock.nanos / 1e6).toFixed(1)} ms emulated`);
});

mcu.core.PC = FLASH_BASE; // boot2 at the start of flash (the ROM's own boot path is not needed)
run();
