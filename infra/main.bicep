// geocatalog-ingest in one command: `azd up` (docs/deploying.md). Creates a resource group with the storage
// account (queues, containers, status table, payload lifecycle rule), a Flex Consumption Python 3.11 Function
// App with a system-assigned identity, Application Insights with Log Analytics, the identity's roles, the
// Event Grid subscription that turns uploads into jobs, the Event Grid topic of job-finished events, and what
// watches it all: resource logs into the workspace, an operations workbook and alert rules (docs/observability.md).
// No keys or connection strings with secrets anywhere.
targetScope = 'subscription'

@minLength(1)
@maxLength(64)
@description('azd environment name: the resource group is rg-<name>, and it seeds the unique resource names.')
param environmentName string

@minLength(1)
@description('Azure region for every resource; it must offer Flex Consumption.')
@metadata({
  azd: {
    type: 'location'
  }
})
param location string

@minLength(1)
@description('GeoCatalog endpoint the app ingests into (GEOCATALOG_ENDPOINT), e.g. https://name.label.region.geocatalog.spatio.azure.com')
param geoCatalogEndpoint string

@description('Resource id of the GeoCatalog (/subscriptions/.../providers/Microsoft.Orbital/geoCatalogs/<name>). When set, the app identity gets geoCatalogRoleDefinitionId on it; empty = assign that role yourself (output FUNCTION_APP_PRINCIPAL_ID).')
param geoCatalogResourceId string = ''

@description('Role the app identity gets on the GeoCatalog: GeoCatalog Administrator, the data role that may write items. Verify with: az role definition list --name "GeoCatalog Administrator" --query [].name')
param geoCatalogRoleDefinitionId string = 'c9c97b9c-105d-4bb5-a2a7-7d15666c2484'

@description('GeoCatalog REST api-version (GEOCATALOG_API_VERSION).')
@allowed([
  '2026-04-15'
  '2025-04-30-preview'
  '2024-01-31-preview'
])
param geoCatalogApiVersion string = '2026-04-15'

@description('Most instances in each per-function scale group. Each instance has up to 12 messages in flight (host.json), and submit and poll both call the GeoCatalog, whose STAC API allows about 50 calls/s per subscription: 2 keeps the app near that limit (docs/deploying.md).')
@minValue(1)
@maxValue(1000)
param maximumInstanceCount int = 2

@description('Memory of each Function App instance, in MB.')
@allowed([
  512
  2048
  4096
])
param instanceMemoryMB int = 2048

@description('Days after their last write that blobs in the payload container (claim-checked batches, operation logs, spilled row fields; they can hold users\' SAS tokens) are deleted. Keep it longer than POLL_DEADLINE_SECONDS plus the time you may take to redrive a poison queue.')
@minValue(1)
param payloadRetentionDays int = 30

@description('Replication of the storage account.')
@allowed([
  'Standard_GRS'
  'Standard_ZRS'
  'Standard_GZRS'
  'Standard_RAGRS'
  'Standard_RAGZRS'
])
param storageSkuName string = 'Standard_GRS'

@description('Object id of the operator who runs the geocatalog-ingest command against this deployment (azd fills in the signed-in principal, AZURE_PRINCIPAL_ID); empty = nobody. It gets only what the command reads and writes (rbac.bicep).')
param principalId string = ''

@description('Kind of principal principalId is: azd fills in AZURE_PRINCIPAL_TYPE (ServicePrincipal when a pipeline runs azd). A wrong kind fails the deployment with UnmatchedPrincipalType.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param principalType string = 'User'

@description('Object id of whoever may submit work from outside: it may add messages to the inbox queue (SUBMIT_QUEUE) and write blobs in the drop container, and nothing else; empty = no assignment.')
param submitterPrincipalId string = ''

@description('Kind of principal submitterPrincipalId is.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param submitterPrincipalType string = 'ServicePrincipal'

@description('Resource id of an existing action group the alert rules notify (/subscriptions/.../providers/Microsoft.Insights/actionGroups/<name>); empty = the alerts fire without actions (visible in the portal only).')
param alertActionGroupId string = ''

@description('Item failure-rate alert: more than this percentage of a collection\'s items settled in 30 minutes ended Failed or Rejected.')
@minValue(1)
@maxValue(100)
param alertFailureRatePercent int = 10

@description('Inbox-age alert: the oldest message in the inbox queue is older than this many seconds.')
@minValue(60)
param alertInboxOldestAgeSeconds int = 900

@description('Also send storage read logs to the workspace (writes and deletes always go). Off by default: idle queue polling makes reads most of the volume.')
param logStorageReads bool = false

@description('More app settings, or changed defaults, from docs/configuration.md, e.g. {"BATCH_MAX_ITEMS": "50", "SOURCE_URL_ALLOWLIST": "planetarycomputer.microsoft.com,example.org"}. The queue, container and table names are fixed by this template.')
param extraAppSettings object = {}

var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var tags = {
  'azd-env-name': environmentName
}
var functionAppName = 'func-${resourceToken}'
var deploymentContainerName = 'app-package-${take(functionAppName, 32)}-${take(resourceToken, 7)}'

// The names the app uses: the defaults of shared/settings.py (tests/test_infra.py holds the two together).
var names = {
  submitQueue: 'stac-submit' // the inbox: job messages from outside
  workQueue: 'stac-work' // internal: batch and plan messages, written by the app's identity only
  pollQueue: 'stac-poll'
  dropEventsQueue: 'stac-drop-events'
  payloadContainer: 'stac-payloads'
  dropContainer: 'stac-drop'
  dropDeadLetterContainer: 'stac-drop-deadletter' // upload events Event Grid could not deliver
  statusTable: 'StacIngestStatus'
  itemIndexTable: 'StacIngestItems'
}

// The queue triggers read these queues; the host moves messages that keep failing to their -poison queues,
// which the sweep timer drains (no trigger polls them).
var queueNames = [
  names.submitQueue
  '${names.submitQueue}-poison'
  names.workQueue
  '${names.workQueue}-poison'
  names.pollQueue
  '${names.pollQueue}-poison'
  names.dropEventsQueue
  '${names.dropEventsQueue}-poison'
]

// Every setting shared/settings.py requires, and every name the triggers or the infrastructure depend on.
// The rest keep the code's defaults (docs/configuration.md). GEOCATALOG_TOKEN stays unset: the app uses its
// managed identity (DefaultAzureCredential).
var appSettings = {
  GEOCATALOG_ENDPOINT: geoCatalogEndpoint
  GEOCATALOG_API_VERSION: geoCatalogApiVersion
  SUBMIT_QUEUE: names.submitQueue
  WORK_QUEUE: names.workQueue
  POLL_QUEUE: names.pollQueue
  DROP_EVENTS_QUEUE: names.dropEventsQueue
  PAYLOAD_CONTAINER: names.payloadContainer
  DROP_CONTAINER: names.dropContainer
  STATUS_TABLE: names.statusTable
  ITEM_INDEX_TABLE: names.itemIndexTable
  MAX_DEQUEUE_COUNT: '5'
  SWEEP_SCHEDULE: '0 */5 * * * *' // the sweep timer reads %SWEEP_SCHEDULE%
  GEOCATALOG_MAX_INSTANCES: string(maximumInstanceCount) // each instance's share of the GeoCatalog's call limit
  JOB_EVENTS_TOPIC_ENDPOINT: jobEvents.outputs.endpoint // one CloudEvent per job that reaches a terminal state
}

// The GeoCatalog may live in another resource group or subscription (ARM evaluates only the chosen branch).
var geoCatalogIdParts = split(geoCatalogResourceId, '/')
var geoCatalogSubscriptionId = empty(geoCatalogResourceId) ? subscription().subscriptionId : geoCatalogIdParts[2]
var geoCatalogResourceGroupName = empty(geoCatalogResourceId) ? 'rg-${environmentName}' : geoCatalogIdParts[4]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: 'rg-${environmentName}'
  location: location
  tags: tags
}

module storage 'app/storage.bicep' = {
  name: 'storage'
  scope: rg
  params: {
    name: 'st${resourceToken}'
    location: location
    tags: tags
    skuName: storageSkuName
    containerNames: [
      names.payloadContainer
      names.dropContainer
      names.dropDeadLetterContainer
      deploymentContainerName
    ]
    queueNames: queueNames
    tableNames: [
      names.statusTable
      names.itemIndexTable
    ]
    payloadContainerName: names.payloadContainer
    payloadRetentionDays: payloadRetentionDays
  }
}

module monitoring 'app/monitoring.bicep' = {
  name: 'monitoring'
  scope: rg
  params: {
    logAnalyticsName: 'log-${resourceToken}'
    applicationInsightsName: 'appi-${resourceToken}'
    location: location
    tags: tags
  }
}

module jobEvents 'app/job-events.bicep' = {
  name: 'job-events'
  scope: rg
  params: {
    topicName: 'evgt-jobs-${resourceToken}'
    location: location
    tags: tags
  }
}

module functionApp 'app/function.bicep' = {
  name: 'function'
  scope: rg
  params: {
    name: functionAppName
    planName: 'plan-${resourceToken}'
    location: location
    tags: tags
    serviceName: 'ingest'
    storageAccountName: storage.outputs.name
    deploymentContainerName: deploymentContainerName
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    appSettings: union(extraAppSettings, appSettings)
  }
}

module rbac 'app/rbac.bicep' = {
  name: 'rbac'
  scope: rg
  params: {
    storageAccountName: storage.outputs.name
    applicationInsightsName: monitoring.outputs.applicationInsightsName
    jobEventsTopicName: jobEvents.outputs.name
    appPrincipalId: functionApp.outputs.principalId
    operatorPrincipalId: principalId
    operatorPrincipalType: principalType
    submitterPrincipalId: submitterPrincipalId
    submitterPrincipalType: submitterPrincipalType
    submitQueueName: names.submitQueue
    payloadContainerName: names.payloadContainer
    dropContainerName: names.dropContainer
    statusTableName: names.statusTable
    itemIndexTableName: names.itemIndexTable
  }
}

module eventGrid 'app/eventgrid.bicep' = {
  name: 'eventgrid'
  scope: rg
  params: {
    topicName: 'evgt-${resourceToken}'
    location: location
    tags: tags
    storageAccountName: storage.outputs.name
    dropContainerName: names.dropContainer
    dropEventsQueueName: names.dropEventsQueue
    deadLetterContainerName: names.dropDeadLetterContainer
  }
}

module diagnostics 'app/diagnostics.bicep' = {
  name: 'diagnostics'
  scope: rg
  params: {
    workspaceName: monitoring.outputs.logAnalyticsName
    storageAccountName: storage.outputs.name
    systemTopicName: eventGrid.outputs.topicName
    jobEventsTopicName: jobEvents.outputs.name
    logStorageReads: logStorageReads
  }
}

module workbook 'app/workbook.bicep' = {
  name: 'workbook'
  scope: rg
  params: {
    displayName: 'geocatalog-ingest (${environmentName})'
    location: location
    tags: tags
    workspaceName: monitoring.outputs.logAnalyticsName
  }
}

module alerts 'app/alerts.bicep' = {
  name: 'alerts'
  scope: rg
  params: {
    location: location
    tags: tags
    workspaceName: monitoring.outputs.logAnalyticsName
    alertActionGroupId: alertActionGroupId
    inboxQueueName: names.submitQueue
    failureRatePercent: alertFailureRatePercent
    inboxOldestAgeSeconds: alertInboxOldestAgeSeconds
  }
}

// The role on the GeoCatalog is assigned in the GeoCatalog's own resource group.
module geoCatalogRole 'app/geocatalog-role.bicep' = if (!empty(geoCatalogResourceId)) {
  name: 'geocatalog-role'
  scope: resourceGroup(geoCatalogSubscriptionId, geoCatalogResourceGroupName)
  params: {
    geoCatalogName: last(geoCatalogIdParts)
    principalId: functionApp.outputs.principalId
    roleDefinitionId: geoCatalogRoleDefinitionId
  }
}

output AZURE_LOCATION string = location
output AZURE_TENANT_ID string = tenant().tenantId
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = functionApp.outputs.name
output FUNCTION_APP_PRINCIPAL_ID string = functionApp.outputs.principalId
output AZURE_STORAGE_ACCOUNT_NAME string = storage.outputs.name
output APPLICATIONINSIGHTS_NAME string = monitoring.outputs.applicationInsightsName
output EVENT_GRID_SYSTEM_TOPIC_NAME string = eventGrid.outputs.topicName
output JOB_EVENTS_TOPIC_NAME string = jobEvents.outputs.name
output JOB_EVENTS_TOPIC_ENDPOINT string = jobEvents.outputs.endpoint
output JOB_EVENTS_TOPIC_PRINCIPAL_ID string = jobEvents.outputs.principalId
output LOG_ANALYTICS_WORKSPACE_NAME string = monitoring.outputs.logAnalyticsName
output SUBMIT_QUEUE string = names.submitQueue
output DROP_CONTAINER string = names.dropContainer
output DROP_DEAD_LETTER_CONTAINER string = names.dropDeadLetterContainer
output STATUS_TABLE string = names.statusTable
