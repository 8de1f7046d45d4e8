// Uploads a file with tus-js-client (the real client, as Uppy uses it) and prints one JSON line:
// {"ok": true, "url": ..., "retries": N} or {"ok": false, "error": ...}.
// Usage: node tus_upload.cjs ENDPOINT FILE PROTOCOL CHUNK_SIZE  (CHUNK_SIZE 0: whole file)
'use strict'
const fs = require('node:fs')
const { Upload } = require('tus-js-client')

const [endpoint, file, protocol, chunk] = process.argv.slice(2)
const data = fs.readFileSync(file)
let retries = 0
const upload = new Upload(data, {
  endpoint,
  protocol,
  chunkSize: Number(chunk) > 0 ? Number(chunk) : Number.POSITIVE_INFINITY,
  retryDelays: [100, 300, 500, 1000, 1000],
  metadata: { filename: 'archive.tar.gz', filetype: 'application/gzip' },
  storeFingerprintForResuming: false,
  onShouldRetry: () => {
    retries += 1
    return true
  },
  onError: (error) => {
    console.log(JSON.stringify({ ok: false, error: String(error) }))
    process.exit(1)
  },
  onSuccess: () => {
    console.log(JSON.stringify({ ok: true, url: upload.url, retries }))
  },
})
upload.start()
