// Sends SIZE bytes (a repeating pattern, made in memory) with tus-js-client to ENDPOINT and
// prints one JSON line: {"ok": true, "seconds": S, "url": ...} (S: creation to the last answer).
// Usage: node tus_send.cjs ENDPOINT SIZE CHUNK_SIZE  (CHUNK_SIZE 0: the whole body in one PATCH)
'use strict'
const { Upload } = require('tus-js-client')

const [endpoint, size, chunk] = process.argv.slice(2)
const data = Buffer.alloc(Number(size))
for (let i = 0; i < data.length; i += 1) data[i] = i & 0xff
const started = process.hrtime.bigint()
const upload = new Upload(data, {
  endpoint,
  chunkSize: Number(chunk) > 0 ? Number(chunk) : Number.POSITIVE_INFINITY,
  retryDelays: [],
  metadata: { filename: 'archive.tar.gz', filetype: 'application/gzip' },
  storeFingerprintForResuming: false,
  onError: (error) => {
    console.log(JSON.stringify({ ok: false, error: String(error) }))
    process.exit(1)
  },
  onSuccess: () => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    console.log(JSON.stringify({ ok: true, seconds, url: upload.url }))
  },
})
upload.start()
