// Log search alert rules over the app's OpenTelemetry metrics (the workspace's AppMetrics table, one row per
// metric, dimension set and export interval; dimensions in Properties). Each rule evaluates every 5 minutes,
// fires once per dimension value (queue, collection) and resolves itself when the condition clears.
// Actions: the action group alertActionGroupId names, or none (the alerts still show in the portal).

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Log Analytics workspace the queries run in (Application Insights writes AppMetrics there).')
param workspaceName string

@description('Resource id of an existing action group (email, SMS, webhook, ...) every alert notifies; empty = alerts without actions.')
param alertActionGroupId string = ''

@description('The inbox queue (SUBMIT_QUEUE), whose oldest message the inbox-age alert watches.')
param inboxQueueName string

@description('Alert when more than this percentage of the items settled in 30 minutes did not succeed (Failed or Rejected), per collection.')
@minValue(1)
@maxValue(100)
param failureRatePercent int = 10

@description('The failure-rate alert ignores a collection that settled fewer items than this in the 30 minutes.')
@minValue(1)
param failureRateMinimumItems int = 20

@description('Alert when the oldest message in the inbox queue is older than this many seconds (the sweeper peeks it every few minutes).')
@minValue(60)
param inboxOldestAgeSeconds int = 900

var actionGroups = empty(alertActionGroupId) ? [] : [
  alertActionGroupId
]

var rules = [
  {
    name: 'geocatalog-ingest-poison-message'
    displayName: 'geocatalog-ingest: message in a poison queue'
    description: 'A message reached a -poison queue after MAX_DEQUEUE_COUNT failed deliveries; the sweeper (SWEEP_SCHEDULE) recorded it as a terminal status row, or ended the batch it named (docs/reliability.md). Look at that row and the traces of the failed deliveries.'
    severity: 1
    windowSize: 'PT15M'
    query: 'AppMetrics | where Name == "geocatalog_ingest.poison.messages" | summarize Messages = sum(Sum) by Queue = tostring(Properties.queue)'
    measure: 'Messages'
    aggregation: 'Total'
    dimension: 'Queue'
    threshold: 0
  }
  {
    name: 'geocatalog-ingest-job-swept'
    displayName: 'geocatalog-ingest: job ended by the sweeper'
    description: 'The sweeper ended a job that stopped making progress (its batches or polls went quiet). The job row holds the reason.'
    severity: 2
    windowSize: 'PT15M'
    query: 'AppMetrics | where Name == "geocatalog_ingest.jobs.swept" | summarize Jobs = sum(Sum) by Collection = tostring(Properties.collection)'
    measure: 'Jobs'
    aggregation: 'Total'
    dimension: 'Collection'
    threshold: 0
  }
  {
    name: 'geocatalog-ingest-failure-rate'
    displayName: 'geocatalog-ingest: item failure rate'
    description: 'More than ${failureRatePercent}% of the items a collection settled in 30 minutes ended Failed or Rejected (at least ${failureRateMinimumItems} items settled).'
    severity: 2
    windowSize: 'PT30M'
    query: 'AppMetrics | where Name == "geocatalog_ingest.items.settled" | extend Outcome = tostring(Properties.outcome) | summarize Settled = sumif(Sum, Outcome in ("Succeeded", "Failed", "Rejected")), NotSucceeded = sumif(Sum, Outcome in ("Failed", "Rejected")) by Collection = tostring(Properties.collection) | where Settled >= ${failureRateMinimumItems} | extend FailurePercent = 100.0 * NotSucceeded / Settled'
    measure: 'FailurePercent'
    aggregation: 'Maximum'
    dimension: 'Collection'
    threshold: failureRatePercent
  }
  {
    name: 'geocatalog-ingest-inbox-age'
    displayName: 'geocatalog-ingest: inbox message waiting too long'
    description: 'The oldest message in the inbox queue (${inboxQueueName}) is older than ${inboxOldestAgeSeconds} seconds: the app is not reading it (stopped, failing at start, or without its storage role).'
    severity: 2
    windowSize: 'PT15M'
    query: 'AppMetrics | where Name == "geocatalog_ingest.queue.oldest_age" | extend Queue = tostring(Properties.queue) | where Queue == "${inboxQueueName}" | summarize OldestSeconds = max(Sum) by Queue'
    measure: 'OldestSeconds'
    aggregation: 'Maximum'
    dimension: 'Queue'
    threshold: inboxOldestAgeSeconds
  }
]

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-12-01' = [for rule in rules: {
  name: rule.name
  location: location
  tags: tags
  kind: 'LogAlert'
  properties: {
    displayName: rule.displayName
    description: rule.description
    severity: rule.severity
    enabled: true
    scopes: [
      workspace.id
    ]
    evaluationFrequency: 'PT5M'
    windowSize: rule.windowSize
    criteria: {
      allOf: [
        {
          query: rule.query
          timeAggregation: rule.aggregation
          metricMeasureColumn: rule.measure
          dimensions: [
            {
              name: rule.dimension
              operator: 'Include'
              values: [
                '*'
              ]
            }
          ]
          operator: 'GreaterThan'
          threshold: rule.threshold
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    skipQueryValidation: true // a new workspace has no AppMetrics rows until the app first exports
    actions: {
      actionGroups: actionGroups
    }
  }
}]

output ruleNames array = [for (rule, index) in rules: alertRules[index].name]
