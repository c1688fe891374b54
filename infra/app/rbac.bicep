// Data-plane roles on the storage account, Application Insights and the job-events topic. Built-in role ids:
// docs: role-based-access-control/built-in-roles (storage, monitor, integration).
//
// The trust boundary: only the app's identity writes the internal queues (work, poll, drop-events) and the
// tables. A submitter may add messages to the inbox queue and upload to the drop container, nothing else.
// The operator gets what the geocatalog-ingest command reads and writes, each role on that one queue,
// container or table.

@description('Storage account the roles apply to.')
param storageAccountName string

@description('Application Insights the app identity publishes telemetry to.')
param applicationInsightsName string

@description('Event Grid custom topic the app publishes job-finished events to (job-events.bicep).')
param jobEventsTopicName string

@description('Principal id of the Function App\'s system-assigned identity.')
param appPrincipalId string

@description('Object id of the operator (user, group or service principal) who runs the geocatalog-ingest command; empty = none.')
param operatorPrincipalId string = ''

@description('Kind of principal operatorPrincipalId is.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param operatorPrincipalType string = 'User'

@description('Object id of whoever submits work from outside (inbox queue and drop container only); empty = none.')
param submitterPrincipalId string = ''

@description('Kind of principal submitterPrincipalId is.')
@allowed([
  'User'
  'Group'
  'ServicePrincipal'
])
param submitterPrincipalType string = 'ServicePrincipal'

@description('The inbox queue (SUBMIT_QUEUE): job messages from outside.')
param submitQueueName string

@description('Container of claim-checked batches, operation logs and CLI uploads (PAYLOAD_CONTAINER).')
param payloadContainerName string

@description('Container whose uploads start jobs (DROP_CONTAINER).')
param dropContainerName string

@description('Table of job and batch rows (STATUS_TABLE).')
param statusTableName string

@description('Table of which jobs and batches handled each item (ITEM_INDEX_TABLE).')
param itemIndexTableName string

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageBlobDataReader: '2a2b9908-6ea1-4ae2-8e65-a410df84e7d1'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageQueueDataMessageSender: 'c6a89b2d-59bc-44d0-9896-0f6e12d7b80a'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageTableDataReader: '76199698-9eea-4c19-bc75-cec21354c6b6'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
  eventGridDataSender: 'd5a91429-5739-47e2-a06b-3470a27159e7'
}

// The host needs Blob Data Owner (leases, keys, the deployment package); the queue triggers need Queue Data
// Contributor (a failed message is updated back onto the queue, poison queues are written); the status
// table and the host's diagnostic events need Table Data Contributor.
var appStorageRoles = [
  roles.storageBlobDataOwner
  roles.storageQueueDataContributor
  roles.storageTableDataContributor
]

var hasOperator = !empty(operatorPrincipalId)
var hasSubmitter = !empty(submitterPrincipalId)

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource submitQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' existing = {
  parent: queueService
  name: submitQueueName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource payloadContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: payloadContainerName
}

resource dropContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' existing = {
  parent: blobService
  name: dropContainerName
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' existing = {
  parent: storage
  name: 'default'
}

resource statusTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: statusTableName
}

resource itemIndexTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' existing = {
  parent: tableService
  name: itemIndexTableName
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' existing = {
  name: applicationInsightsName
}

resource jobEventsTopic 'Microsoft.EventGrid/topics@2025-02-15' existing = {
  name: jobEventsTopicName
}

resource appStorage 'Microsoft.Authorization/roleAssignments@2022-04-01' = [for role in appStorageRoles: {
  name: guid(storage.id, appPrincipalId, role)
  scope: storage
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
  }
}]

resource appTelemetry 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, appPrincipalId, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

// Publish events to the job-events topic, nothing else (not subscribe, not manage).
resource appJobEvents 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(jobEventsTopic.id, appPrincipalId, roles.eventGridDataSender)
  scope: jobEventsTopic
  properties: {
    principalId: appPrincipalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.eventGridDataSender)
  }
}

// ----- the submitter: the inbox and the drop container, nothing else -----

resource submitterInbox 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasSubmitter) {
  name: guid(submitQueue.id, submitterPrincipalId, roles.storageQueueDataMessageSender)
  scope: submitQueue
  properties: {
    principalId: submitterPrincipalId
    principalType: submitterPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
  }
}

resource submitterDrop 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasSubmitter) {
  name: guid(dropContainer.id, submitterPrincipalId, roles.storageBlobDataContributor)
  scope: dropContainer
  properties: {
    principalId: submitterPrincipalId
    principalType: submitterPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

// ----- the operator: what geocatalog-ingest reads and writes -----
// submit and retry send job messages to the inbox; submit uploads inputs to payloads/inbox/ and retry writes
// payloads/retries/; logs, failures and retry read payload blobs and the byte ranges of uploads in the drop
// container; jobs, status, watch, failures and item read the two tables, and nothing writes them.

resource operatorInbox 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  name: guid(submitQueue.id, operatorPrincipalId, roles.storageQueueDataMessageSender)
  scope: submitQueue
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataMessageSender)
  }
}

resource operatorPayloads 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  name: guid(payloadContainer.id, operatorPrincipalId, roles.storageBlobDataContributor)
  scope: payloadContainer
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource operatorDrop 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  name: guid(dropContainer.id, operatorPrincipalId, roles.storageBlobDataReader)
  scope: dropContainer
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataReader)
  }
}

resource operatorStatus 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  name: guid(statusTable.id, operatorPrincipalId, roles.storageTableDataReader)
  scope: statusTable
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
  }
}

resource operatorItemIndex 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (hasOperator) {
  name: guid(itemIndexTable.id, operatorPrincipalId, roles.storageTableDataReader)
  scope: itemIndexTable
  properties: {
    principalId: operatorPrincipalId
    principalType: operatorPrincipalType
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataReader)
  }
}
