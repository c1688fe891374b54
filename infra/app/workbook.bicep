// The operations workbook: throughput, lag and duration percentiles, failures by code, 429s and the pacer's
// rate, queue ages and a per-collection table, all from the app's OpenTelemetry metrics in the workspace's
// AppMetrics table. The workbook itself is workbook.json beside this file (open it in the portal's workbook
// editor, "Advanced editor", to change it and paste the result back).

@description('Display name of the workbook in the portal.')
param displayName string

@description('Azure region.')
param location string

@description('Tags for every resource.')
param tags object = {}

@description('Log Analytics workspace the queries run in (Application Insights writes AppMetrics there).')
param workspaceName string

resource workspace 'Microsoft.OperationalInsights/workspaces@2023-09-01' existing = {
  name: workspaceName
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(workspace.id, 'geocatalog-ingest-workbook') // a workbook's name must be a GUID
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: displayName
    category: 'workbook'
    sourceId: workspace.id
    serializedData: loadTextContent('workbook.json')
  }
}

output id string = workbook.id
