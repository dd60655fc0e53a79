// Print the root CID of a directory on disk as ipfs-unixfs-importer computes it.
// usage: node import.mjs DIR [unixfs-v1-2025|unixfs-v0-2015]
import { importer } from 'ipfs-unixfs-importer'
import { MemoryBlockstore } from 'blockstore-core/memory'
import { readdirSync, readFileSync, statSync } from 'node:fs'
import { join, basename } from 'node:path'

const [dir, profile = 'unixfs-v1-2025'] = process.argv.slice(2)
const top = basename(dir)

function * entries (abs, rel) {
  const names = readdirSync(abs)
  if (names.length === 0) yield { path: rel }
  for (const name of names) {
    const a = join(abs, name)
    const r = `${rel}/${name}`
    if (statSync(a).isDirectory()) yield * entries(a, r)
    else yield { path: r, content: readFileSync(a) }
  }
}

let root
for await (const entry of importer(entries(dir, top), new MemoryBlockstore(), { profile })) {
  if (entry.path === top) root = entry.cid
}
console.log(root.toString())
