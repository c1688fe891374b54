// The app identity's data role on the GeoCatalog, deployed in the GeoCatalog's own resource group (which may be
// in another subscription than the app).

@description('Name of the GeoCatalog (Microsoft.Orbital/geoCatalogs) in this resource group.')
param geoCatalogName string

@description('Principal id of the Function App\'s system-assigned identity.')
param principalId string

@description('Role definition id (GUID) to assign: one that may write items.')
param roleDefinitionId string

resource geoCatalog 'Microsoft.Orbital/geoCatalogs@2025-02-11-preview' existing = {
  name: geoCatalogName
}

resource writer 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(geoCatalog.id, principalId, roleDefinitionId)
  scope: geoCatalog
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roleDefinitionId)
  }
}
