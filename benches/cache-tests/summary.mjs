// Counts a cache-tests results file the way cache-tests.fyi shows it: required tests
// passed and failed, optimal tests passed, beside the published results of the
// reverse proxies. Usage: node summary.mjs SUITE_DIR OURS.json
import { readFileSync } from 'node:fs'
import { pathToFileURL } from 'node:url'
import path from 'node:path'

const [suiteDir, oursFile] = process.argv.slice(2)
const load = (rel) => import(pathToFileURL(path.resolve(suiteDir, rel)).href)
const testSuites = (await load('tests/index.mjs')).default
const { determineTestResult, resultTypes } = await load('test-engine/lib/results.mjs')
const index = (await load('results/index.mjs')).default

function count (results) {
  const tally = { required: 0, failed: 0, optimal: 0, failures: [] }
  for (const suite of testSuites) {
    for (const test of suite.tests) {
      const result = determineTestResult(testSuites, test.id, results)
      const required = test.kind === undefined || test.kind === 'required'
      if (required && result === resultTypes.pass) tally.required++
      if (required && result === resultTypes.fail) {
        tally.failed++
        tally.failures.push(test.id)
      }
      if (test.kind === 'optimal' && result === resultTypes.pass) tally.optimal++
    }
  }
  return tally
}

const rows = [['stackway', count(JSON.parse(readFileSync(oursFile)))]]
for (const item of index.filter(item => item.type === 'rev-proxy')) {
  const results = JSON.parse(readFileSync(path.resolve(suiteDir, 'results', item.file)))
  rows.push([`${item.name} ${item.version}`, count(results)])
}
console.log('| cache | required passed | required failed | optimal passed |')
console.log('|---|---|---|---|')
for (const [name, t] of rows) console.log(`| ${name} | ${t.required} | ${t.failed} | ${t.optimal} |`)
console.log(`\nstackway's required failures: ${rows[0][1].failures.join(', ') || 'none'}`)
