// @tus/server with @tus/s3-store, as its README sets it up, for bench/bench_resumable.py.
// Usage: node tus_server.cjs PORT S3_ENDPOINT BUCKET  (credentials: AWS_ACCESS_KEY_ID and
// AWS_SECRET_ACCESS_KEY from the environment). Uploads go to http://127.0.0.1:PORT/files.
'use strict'
const http = require('node:http')
const { Server } = require('@tus/server')
const { S3Store } = require('@tus/s3-store')

const [port, endpoint, bucket] = process.argv.slice(2)
const datastore = new S3Store({
  partSize: 8 * 1024 * 1024, // the gateway's part size, for a like-for-like figure
  s3ClientConfig: {
    bucket,
    endpoint,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: {
      accessKeyId: process.env.AWS_ACCESS_KEY_ID,
      secretAccessKey: process.env.AWS_SECRET_ACCESS_KEY,
    },
  },
})
const server = new Server({ path: '/files', datastore })
http.createServer((req, res) => server.handle(req, res)).listen(Number(port), '127.0.0.1')
