#!/usr/bin/env node
// Scores results of the HTTP cache conformance suite (http-tests/cache-tests) in shared-cache
// mode with the suite's own verdict (determineTestResult): a pass is its pass verdict; 'check'
// tests never count; required = no kind or kind 'required'.
//
// usage: node score.mjs SUITE_DIR [--deps] [--hide-checks] [--summary] RESULTS.json [more.json ...]
//   --deps         honour test dependencies (depends_on) like the cache-tests.fyi web page;
//                  default is the CLI's verdict (determineTestResult(..., honorDependencies=false)),
//                  which is what reproduces the reference scores (nginx 181/115 etc.).
//   --hide-checks  omit kind 'check' tests from the non-passing list
//   --summary      only print one summary line per file (no non-passing list)
import fs from 'fs'
import path from 'path'
import { pathToFileURL } from 'url'

const SUITE = path.resolve(process.argv[2] ?? '.')
const { determineTestResult, resultTypes } = await import(pathToFileURL(path.join(SUITE, 'test-engine/lib/results.mjs')))
const indexPath = path.join(SUITE, 'tests/index.mjs')
const { default: testSuites } = await import(pathToFileURL(indexPath))

// Map each suite object to its source file (suite ids don't always match file names).
const suiteFile = new Map()
for (const m of fs.readFileSync(indexPath, 'utf8').matchAll(/^import\s+\w+\s+from\s+'\.\/([^']+)'/gm)) {
  const mod = await import(pathToFileURL(path.join(SUITE, 'tests', m[1])))
  suiteFile.set(mod.default, m[1])
}

const args = process.argv.slice(3)
const honorDeps = args.includes('--deps')
const hideChecks = args.includes('--hide-checks')
const summaryOnly = args.includes('--summary')
const files = args.filter(a => !a.startsWith('--'))
if (files.length === 0) {
  console.error('usage: node score.mjs SUITE_DIR [--deps] [--hide-checks] [--summary] results/NAME.json ...')
  process.exit(2)
}

// Shared-cache selection, same as test-engine/client/runner.mjs with browserCache=false:
// drop browser_only; keep cdn_only and browser_skip tests.
const selected = []
for (const suite of testSuites) {
  for (const test of suite.tests) {
    if (test.browser_only === true) continue
    selected.push({ suite, test })
  }
}
const isRequired = t => t.kind === undefined || t.kind === 'required'
const totalCount = selected.length
const requiredCount = selected.filter(({ test }) => isRequired(test)).length
const optionalCount = selected.filter(({ test }) => test.kind === 'optimal').length
const checkCount = selected.filter(({ test }) => test.kind === 'check').length
const knownIds = new Set(selected.map(({ test }) => test.id))

for (const file of files) {
  const results = JSON.parse(fs.readFileSync(file, 'utf8'))
  let pass = 0; let reqPass = 0; let optPass = 0; let untested = 0
  const failing = new Map() // file -> [{id, kind, sym}]
  for (const { suite, test } of selected) {
    const verdict = determineTestResult(testSuites, test.id, results, honorDeps)
    if (verdict === resultTypes.untested) untested++
    if (verdict === resultTypes.pass && test.kind !== 'check') {
      pass++
      if (isRequired(test)) reqPass++
      else optPass++
      continue
    }
    if (hideChecks && test.kind === 'check') continue
    const f = suiteFile.get(suite) || suite.id
    if (!failing.has(f)) failing.set(f, [])
    failing.get(f).push({ id: test.id, kind: test.kind || 'required', sym: verdict[2] })
  }
  const unknown = Object.keys(results).filter(id => !knownIds.has(id))

  if (summaryOnly) {
    console.log(`${path.basename(file)}\ttotal ${pass}\trequired ${reqPass}/${requiredCount}\toptional ${optPass}/${optionalCount}` +
      (untested ? `\tuntested ${untested}` : '') + (unknown.length ? `\tunknown-ids ${unknown.length}` : ''))
    continue
  }
  console.log(`== ${file}${honorDeps ? ' (dependencies honoured)' : ''}`)
  console.log(`tests (shared mode): ${totalCount} (required ${requiredCount}, optional ${optionalCount}, check ${checkCount})`)
  console.log(`total pass:    ${pass}`)
  console.log(`required pass: ${reqPass}/${requiredCount}`)
  console.log(`optional pass: ${optPass}/${optionalCount}`)
  if (untested) console.log(`untested (no result): ${untested}`)
  if (unknown.length) console.log(`result ids not in suite: ${unknown.join(', ')}`)
  console.log('\nnon-passing tests by file:')
  for (const [f, list] of failing) {
    console.log(`  ${f}`)
    for (const { id, kind, sym } of list) console.log(`    ${sym}\t${kind}\t${id}`)
  }
  console.log('')
}
