// Verify a gateway's CAR with independent implementations (@ipld/car, ipfs-unixfs-exporter):
// every block must hash to its CID, PATH under the requested ROOT must resolve using only its blocks
// (the pathing blocks), and the CAR's header root must be the path's terminal CID (as boxo writes it).
// usage: node verify-car.mjs CARFILE ROOT PATH [OFFSET LENGTH]  -> JSON {root, cid, type, size, sha256, blocks}
import { createReadStream } from 'node:fs'
import { createHash } from 'node:crypto'
import { CarBlockIterator } from '@ipld/car'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { exporter } from 'ipfs-unixfs-exporter'
import { sha256 } from 'multiformats/hashes/sha2'
import { equals } from 'multiformats/bytes'

const [carFile, root, path, offset, length] = process.argv.slice(2)
const iterator = await CarBlockIterator.fromIterable(createReadStream(carFile))
const roots = await iterator.getRoots()
if (roots.length !== 1) throw new Error(`want one root, got ${roots.length}`)
const store = new MemoryBlockstore()
let blocks = 0
for await (const { cid, bytes } of iterator) {
  if (cid.multihash.code !== sha256.code) throw new Error(`${cid}: not sha2-256`)
  const digest = await sha256.digest(bytes)
  if (!equals(digest.digest, cid.multihash.digest)) throw new Error(`block ${cid} does not match its CID`)
  await store.put(cid, bytes)
  blocks++
}
const entry = await exporter(`${root}/${path}`.replace(/\/+$/, ''), store)
if (!entry.cid.equals(roots[0])) throw new Error(`CAR root ${roots[0]} is not the path's CID ${entry.cid}`)
const hash = createHash('sha256')
let size = 0
if (entry.type === 'file' || entry.type === 'raw') {
  const opts = offset !== undefined ? { offset: Number(offset), length: Number(length) } : {}
  for await (const chunk of entry.content(opts)) { hash.update(chunk); size += chunk.length }
} else if (entry.type === 'directory') {
  for await (const child of entry.entries()) { hash.update(child.name + '\n'); size++ }
}
console.log(JSON.stringify({ root: roots[0].toString(), cid: entry.cid.toString(), type: entry.type, size, sha256: hash.digest('hex'), blocks }))
